"""`labvmm lab` (labvmm/cli/lab.py): how JupyterLab is started, where the notebooks come from, clear refusals.

The unit tests replace `start_jupyterlab` (the exec into JupyterLab) and record the command;
one slow test starts a real JupyterLab headless on 127.0.0.1 and talks to it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from labvmm.cli import lab, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def started(monkeypatch):
    """Records what `labvmm lab` would exec instead of starting JupyterLab; no browser, not root, port 8888 free."""
    calls = []
    monkeypatch.setattr(lab, "start_jupyterlab", lambda command, env: calls.append((command, env)) or 0)
    monkeypatch.setattr(lab, "browser_available", lambda: False)
    monkeypatch.setattr(lab, "is_root", lambda: False)
    monkeypatch.setattr(lab, "port_free", lambda ip, port: True)
    return calls


def option(command: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in command if a.startswith(f"--ServerApp.{name}="))


def test_without_a_browser_it_starts_jupyterlab_headless_and_prints_the_url_and_ssh_line(started, capsys):
    """No browser: --no-browser, the URL with the token, and the ssh -L line for a laptop."""
    assert main(["lab"]) == 0
    (command, env), = started
    assert command[:3] == [sys.executable, "-m", "jupyterlab"] and "--no-browser" in command
    assert option(command, "root_dir") == str(ROOT / "notebooks")
    assert (option(command, "ip"), option(command, "port"), option(command, "port_retries")) == ("127.0.0.1", "8888", "0")
    assert option(command, "log_level") == "WARN"  # its start-up log would scroll the URL away
    token = env["JUPYTER_TOKEN"]
    assert len(token) >= 32 and not any(token in arg for arg in command)  # not visible in ps
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:8888/lab?token={token}" in out
    assert re.search(r"ssh -L 8888:localhost:8888 \S+@\S+", out)
    assert "memtest OK" not in out  # the demo is `labvmm demo` only


def test_with_a_browser_it_lets_jupyterlab_open_it(started, monkeypatch, capsys):
    """A browser here: no --no-browser and no ssh hint."""
    monkeypatch.setattr(lab, "browser_available", lambda: True)
    assert main(["lab"]) == 0
    (command, _), = started
    assert "--no-browser" not in command and "ssh -L" not in capsys.readouterr().out


def test_ip_port_and_arguments_after_a_double_dash_pass_through(started, capsys):
    """--ip, --port, --allow-root and everything after -- reach JupyterLab."""
    assert main(["lab", "--ip", "0.0.0.0", "--port", "9999", "--allow-root", "--",
                 "--ServerApp.base_url=/lab1/", "--debug"]) == 0
    (command, _), = started
    assert (option(command, "ip"), option(command, "port")) == ("0.0.0.0", "9999")
    assert command[-3:] == ["--allow-root", "--ServerApp.base_url=/lab1/", "--debug"]
    assert not any("log_level" in arg for arg in command)  # the user asked for --debug
    assert "running as root" not in capsys.readouterr().out


def test_as_root_it_passes_allow_root_with_a_note(started, monkeypatch, capsys):
    """Root (a container): --allow-root is added and the user is told why."""
    monkeypatch.setattr(lab, "is_root", lambda: True)
    assert main(["lab"]) == 0
    (command, _), = started
    assert "--allow-root" in command
    assert "running as root, so JupyterLab gets --allow-root" in capsys.readouterr().out


def test_a_token_given_after_the_double_dash_is_the_one_printed(started, capsys):
    """A token the user passes to JupyterLab is used in the printed URL, and none is made up."""
    assert main(["lab", "--", "--IdentityProvider.token=abc123"]) == 0
    (_, env), = started
    assert "JUPYTER_TOKEN" not in env or env["JUPYTER_TOKEN"] == os.environ.get("JUPYTER_TOKEN")
    assert "lab?token=abc123" in capsys.readouterr().out


def test_a_taken_default_port_moves_to_the_next_free_one(started, monkeypatch, capsys):
    """8888 busy: 8889, said so; the URL names the port JupyterLab will really use."""
    monkeypatch.setattr(lab, "port_free", lambda ip, port: port != 8888)
    assert main(["lab"]) == 0
    (command, _), = started
    assert option(command, "port") == "8889"
    out = capsys.readouterr().out
    assert "port 8888 is taken, using 8889" in out and ":8889/lab?token=" in out


def test_a_taken_port_asked_for_is_refused():
    """--port N with something listening on it: a one-line error, no JupyterLab."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not lab.port_free("127.0.0.1", port)
        with pytest.raises(lab.UsageError, match=f"--port {port}: something already listens on 127.0.0.1:{port}"):
            lab.choose_port("127.0.0.1", port)


def test_without_jupyterlab_it_prints_the_exact_pip_command(started, monkeypatch, capsys):
    """No JupyterLab in this Python: exit 2 with the pip command that installs the lab extra here."""
    real = lab.importlib.util.find_spec
    monkeypatch.setattr(lab.importlib.util, "find_spec", lambda name: None if name == "jupyterlab" else real(name))
    assert main(["lab"]) == 2
    err = capsys.readouterr().err
    assert f"{sys.executable} -m pip install -e {ROOT}[lab]" in err.replace("'", "")
    assert started == []


def test_a_missing_dir_is_refused(started, capsys):
    """--dir with a folder that does not exist is a one-line error."""
    assert main(["lab", "--dir", "no/such/folder"]) == 2
    assert "--dir 'no/such/folder' is not a folder of notebooks" in capsys.readouterr().err


def test_no_notebooks_anywhere_says_where_it_looked(started, monkeypatch, tmp_path, capsys):
    """Neither a checkout nor shipped notebooks: the error names both places."""
    monkeypatch.setattr(lab, "checkout_root", lambda: None)
    monkeypatch.setattr(lab, "shipped_notebooks", lambda: tmp_path / "nothing")
    assert main(["lab"]) == 2
    err = capsys.readouterr().err
    assert "no notebooks folder" in err and str(tmp_path / "nothing") in err and "--dir" in err


def test_an_installed_labvmm_copies_its_notebooks_into_the_users_folder(started, monkeypatch, tmp_path, capsys):
    """From a wheel (no checkout) the shipped notebooks are copied to $LABVMM_NOTEBOOKS and opened there."""
    shipped = tmp_path / "site-packages" / "labvmm" / "notebooks"
    shipped.mkdir(parents=True)
    (shipped / "01-first-vm.ipynb").write_text('{"cells": []}')
    monkeypatch.setattr(lab, "checkout_root", lambda: None)
    monkeypatch.setattr(lab, "shipped_notebooks", lambda: shipped)
    monkeypatch.setenv("LABVMM_NOTEBOOKS", str(tmp_path / "mine"))
    assert main(["lab"]) == 0
    (command, _), = started
    assert option(command, "root_dir") == str(tmp_path / "mine")
    assert (tmp_path / "mine" / "01-first-vm.ipynb").read_text() == '{"cells": []}'
    assert "copied 01-first-vm.ipynb" in capsys.readouterr().out


def test_copying_never_overwrites_a_students_changes(tmp_path):
    """A changed notebook is kept; an unchanged one follows a new release; a new one is added."""
    shipped, mine = tmp_path / "shipped", tmp_path / "mine"
    shipped.mkdir()
    (shipped / "a.ipynb").write_text("a1")
    (shipped / "b.ipynb").write_text("b1")
    assert lab.copy_notebooks(shipped, mine) == ["copied a.ipynb", "copied b.ipynb"]
    (mine / "a.ipynb").write_text("a1 with my answers")
    (shipped / "a.ipynb").write_text("a2")
    (shipped / "b.ipynb").write_text("b2")
    (shipped / "c.ipynb").write_text("c1")
    notes = lab.copy_notebooks(shipped, mine)
    assert notes == [f"kept your changed a.ipynb (this release's version: {shipped / 'a.ipynb'})",
                     "updated b.ipynb (you had not changed it)", "copied c.ipynb"]
    assert [(mine / n).read_text() for n in ("a.ipynb", "b.ipynb", "c.ipynb")] == ["a1 with my answers", "b2", "c1"]
    assert lab.copy_notebooks(shipped, mine) == [f"kept your changed a.ipynb (this release's version: {shipped / 'a.ipynb'})"]


@pytest.mark.parametrize(("env", "expected"), [({"SSH_CONNECTION": "10.0.0.1 5 10.0.0.2 22", "DISPLAY": ":0"}, False),
                                               ({}, False), ({"DISPLAY": ":0"}, True),
                                               ({"WAYLAND_DISPLAY": "wayland-0"}, True)])
def test_no_browser_over_ssh_or_without_a_display(monkeypatch, env, expected):
    """An SSH session, or Linux without DISPLAY/WAYLAND_DISPLAY, counts as no browser; a local display does."""
    for name in ("SSH_CONNECTION", "SSH_TTY", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(lab.sys, "platform", "linux")
    monkeypatch.setattr(lab.webbrowser, "get", lambda *a: object())  # Python finds a browser
    assert lab.browser_available() is expected


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_lab_starts_a_real_jupyterlab_headless_that_answers_with_its_token(tmp_path):
    """`labvmm lab --no-browser` serves JupyterLab on 127.0.0.1: /api/status answers with the printed token only."""
    pytest.importorskip("jupyterlab", reason="JupyterLab is in the lab extra: pip install -e '.[lab]'")
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    env = dict(os.environ, HOME=str(tmp_path), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               IPYTHONDIR=str(tmp_path / "ipython"))
    env.pop("JUPYTER_TOKEN", None)
    port = free_port()
    child = subprocess.Popen([sys.executable, "-m", "labvmm.cli", "lab", "--no-browser", "--port", str(port),
                              "--dir", str(notebooks)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, env=env, cwd=tmp_path)
    try:
        url = None
        for line in child.stdout:
            found = re.search(r"open (http://127\.0\.0\.1:\d+/lab\?token=(\w+))", line)
            if found:
                url, token = found.groups()
                break
        assert url and f":{port}/" in url
        status = None
        deadline = time.monotonic() + 120  # a guard against a hang, not a timing check
        while status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=10) as r:
                    status = json.load(r)
            except OSError:
                assert time.monotonic() < deadline and child.poll() is None, "JupyterLab never answered"
                time.sleep(0.5)
        assert "started" in status
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token=wrong", timeout=10)
        assert refused.value.code == 403
    finally:
        child.send_signal(signal.SIGTERM)  # labvmm became JupyterLab: the same pid
        child.wait(timeout=60)
        child.stdout.close()
