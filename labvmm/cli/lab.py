"""`labvmm lab`: JupyterLab on the course notebooks, on a laptop, a course server over SSH, or a container.

Where the notebooks come from. From a checkout (the editable install the README uses) the
checkout's own notebooks/ is opened, so work stays in the clone. An installed wheel ships
the notebooks as package data (`labvmm/notebooks/`), which may be read-only and is replaced
on every upgrade: they are copied into a folder of the user's (~/labvmm-notebooks, or
$LABVMM_NOTEBOOKS), and copied again on each start only where that is safe. A notebook the
student has changed is never overwritten: `.labvmm-shipped.json` there records the hash of
each copy made, and only a notebook still equal to its copy is replaced by a newer release.

Without a web browser (no display, or an SSH session) JupyterLab starts with --no-browser,
and the URL with its token is printed with the `ssh -L` line that reaches it from a laptop.
The token is passed in JUPYTER_TOKEN, not on the command line, where other users of a
course server could read it. As root (containers) --allow-root is passed, with a note.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import importlib.util
import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import webbrowser
from pathlib import Path

from .args import UsageError, port_number

DEFAULT_PORT = 8888
#: Ports tried after a taken default port (JupyterLab's own port_retries is turned off, so
#: the URL printed is the one it listens on).
PORT_TRIES = 20
USER_FOLDER_ENV = "LABVMM_NOTEBOOKS"
SHIPPED_RECORD = ".labvmm-shipped.json"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # labvmm/


def add_parser(sub) -> None:
    """The `lab` subcommand's options."""
    lab = sub.add_parser(
        "lab", help="start JupyterLab on the course notebooks",
        description="Start JupyterLab on the course notebooks. Without a web browser (no display, an SSH "
                    "session, a container) it prints the URL with its token and how to reach it over SSH.",
        epilog="Arguments after -- go to JupyterLab unchanged, e.g. labvmm lab -- --ServerApp.base_url=/lab1/",
    )
    lab.add_argument("--dir", default=None, help="folder of notebooks (default: the checkout's notebooks/, or "
                                                 f"~/labvmm-notebooks for an installed labvmm; ${USER_FOLDER_ENV})")
    lab.add_argument("--ip", default="127.0.0.1", help="address JupyterLab listens on (default 127.0.0.1; "
                                                       "0.0.0.0: every interface, the token still guards it)")
    lab.add_argument("--port", type=port_number, default=None,
                     help=f"port (default {DEFAULT_PORT}, or the next free one)")
    browser = lab.add_mutually_exclusive_group()
    browser.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    browser.add_argument("--browser", action="store_true", help="open a web browser even over SSH")
    lab.add_argument("--allow-root", action="store_true", help="let JupyterLab run as root (passed anyway as root)")
    lab.add_argument("jupyter_args", nargs="*", metavar="-- JUPYTER_ARGS", help=argparse.SUPPRESS)


# -- where the notebooks are --------------------------------------------------------------
def checkout_root() -> Path | None:
    """The labvmm checkout this package runs from (an editable install), or None for an installed wheel."""
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() and (root / "labvmm").is_dir():
        return root
    return None


def shipped_notebooks() -> Path:
    """The notebooks an installed labvmm carries as package data."""
    return PACKAGE_DIR / "notebooks"


def user_folder() -> Path:
    """Where an installed labvmm puts the student's copies of the notebooks."""
    return Path(os.environ.get(USER_FOLDER_ENV) or Path.home() / "labvmm-notebooks").expanduser()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_notebooks(source: Path, target: Path) -> list[str]:
    """Copy the shipped notebooks into `target` without overwriting a student's edits; returns what happened."""
    target.mkdir(parents=True, exist_ok=True)
    record_path = target / SHIPPED_RECORD
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    notes = []
    for shipped in sorted(source.glob("*.ipynb")):
        mine = target / shipped.name
        new = _digest(shipped)
        if not mine.exists():
            notes.append(f"copied {shipped.name}")
        elif _digest(mine) == new:
            record[shipped.name] = new
            continue
        elif _digest(mine) == record.get(shipped.name):
            notes.append(f"updated {shipped.name} (you had not changed it)")
        else:
            notes.append(f"kept your changed {shipped.name} (this release's version: {shipped})")
            continue
        mine.write_bytes(shipped.read_bytes())
        record[shipped.name] = new
    record_path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return notes


def notebooks_folder(dir_arg: str | None) -> tuple[Path, list[str]]:
    """(the folder to open, notes for the user); raises UsageError naming every place it looked."""
    if dir_arg is not None:
        folder = Path(dir_arg).expanduser()
        if not folder.is_dir():
            raise UsageError(f"--dir {dir_arg!r} is not a folder of notebooks")
        return folder.resolve(), []
    root = checkout_root()
    if root is not None:
        return root / "notebooks", []
    shipped = shipped_notebooks()
    if shipped.is_dir() and any(shipped.glob("*.ipynb")):
        target = user_folder()
        return target, copy_notebooks(shipped, target)
    raise UsageError(
        f"no notebooks folder: not in a labvmm checkout ({PACKAGE_DIR.parent / 'notebooks'}) and none shipped "
        f"with the installed package ({shipped}); pass --dir FOLDER"
    )


# -- the browser, the port, root ----------------------------------------------------------
def browser_available() -> bool:
    """True when a graphical web browser can open here: a display, no SSH session, and Python finds one."""
    if os.environ.get("SSH_CONNECTION") or os.environ.get("SSH_TTY"):
        return False
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")) and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def port_free(ip: str, port: int) -> bool:
    """True when nothing listens on ip:port (JupyterLab could bind it)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError:
            return False
    return True


def choose_port(ip: str, asked: int | None) -> tuple[int, str | None]:
    """(port, a note); a port the user asked for must be free, the default moves on to the next free one."""
    if asked is not None:
        if not port_free(ip, asked):
            raise UsageError(f"--port {asked}: something already listens on {ip}:{asked} (another JupyterLab?); "
                             "pick another port")
        return asked, None
    for port in range(DEFAULT_PORT, DEFAULT_PORT + PORT_TRIES):
        if port_free(ip, port):
            return port, (None if port == DEFAULT_PORT else f"port {DEFAULT_PORT} is taken, using {port}")
    raise UsageError(f"ports {DEFAULT_PORT}-{DEFAULT_PORT + PORT_TRIES - 1} on {ip} are all taken; pass --port N")


def is_root() -> bool:
    """True when running as root (JupyterLab refuses that without --allow-root)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _given_token(jupyter_args: list[str]) -> str | None:
    for arg in jupyter_args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("-").endswith(".token"):
            return value
    return None


def _server_name() -> str:
    """This machine's name as seen from a laptop, or a placeholder when it only knows itself as localhost."""
    for name in (socket.getfqdn(), socket.gethostname()):
        if name and not name.startswith("localhost"):
            return name
    return "SERVER"


def lab_command(folder: Path, ip: str, port: int, *, open_browser: bool, allow_root: bool,
                jupyter_args: list[str]) -> list[str]:
    """The JupyterLab command line (the token travels in the environment)."""
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}", f"--ServerApp.ip={ip}",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if not any("log_level" in arg or arg == "--debug" for arg in jupyter_args):
        # Warnings only: its start-up log would scroll labvmm's URL and ssh line off a terminal.
        command.append("--ServerApp.log_level=WARN")
    if not open_browser:
        command.append("--no-browser")
    if allow_root:
        command.append("--allow-root")
    return command + list(jupyter_args)


def start_jupyterlab(command: list[str], env: dict[str, str]) -> int:
    """Become JupyterLab (exec on POSIX: its pid, signals and Ctrl-C are labvmm's); returns its status elsewhere."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execve(command[0], command, env)
    return subprocess.call(command, env=env)


def main(args) -> int:
    """`labvmm lab`: prints where and how to reach JupyterLab, then becomes it."""
    if args.dir is not None and not Path(args.dir).expanduser().is_dir():
        raise UsageError(f"--dir {args.dir!r} is not a folder of notebooks")
    if importlib.util.find_spec("jupyterlab") is None:
        root = checkout_root()
        how = (f"{shlex.quote(sys.executable)} -m pip install -e {shlex.quote(str(root) + '[lab]')}" if root
               else f"{shlex.quote(sys.executable)} -m pip install 'labvmm[lab]'")
        raise UsageError(f"JupyterLab is not installed in this Python ({sys.executable}); install the lab extra: {how}")
    folder, notes = notebooks_folder(args.dir)
    port, port_note = choose_port(args.ip, args.port)
    open_browser = args.browser or (not args.no_browser and browser_available())
    allow_root = args.allow_root or is_root()
    env = dict(os.environ)
    token = _given_token(args.jupyter_args)
    if token is None:
        token = env.get("JUPYTER_TOKEN") or secrets.token_hex(24)
        env["JUPYTER_TOKEN"] = token
    command = lab_command(folder, args.ip, port, open_browser=open_browser, allow_root=allow_root,
                          jupyter_args=args.jupyter_args)
    for note in notes + ([port_note] if port_note else []):
        print(f"labvmm lab: {note}")
    if allow_root and not args.allow_root:
        print("labvmm lab: running as root, so JupyterLab gets --allow-root (it refuses root otherwise); "
              "an ordinary user account is safer")
    host = args.ip if args.ip not in ("0.0.0.0", "::", "") else socket.gethostname()
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/lab?token={token}"
    print(f"labvmm lab: JupyterLab on {folder}")
    print(f"labvmm lab: open {url}")
    if not open_browser:
        user, server = getpass.getuser(), _server_name()
        print("labvmm lab: no web browser here. From your own computer, forward the port over SSH:\n"
              f"    ssh -L {port}:localhost:{port} {user}@{server}\n"
              f"  then open http://localhost:{port}/lab?token={token}")
    print("labvmm lab: Ctrl-C twice stops JupyterLab")
    return start_jupyterlab(command, env)
