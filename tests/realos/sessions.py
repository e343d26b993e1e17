"""The recorded console sessions of the real operating systems, and their expected transcripts.

    python tests/realos/sessions.py record [NAME...]   run on QEMU, write expected/<name>.txt
    python tests/realos/sessions.py check [NAME...]    run on QEMU, compare with expected/

A session is a machine (guests/realos.py `Boot`) and a console script; its expected
transcript is QEMU's output after `normalize` (normalize.py), so a second QEMU run, or a
labvmm run, must give the same text. The usertests sessions take minutes (marked slow in
the tests); the others take about a second each on QEMU.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:  # guests/ and this folder are folders of the checkout, not packages
        sys.path.insert(0, path)

import images  # noqa: E402
from normalize import normalize  # noqa: E402

from guests import realos  # noqa: E402
from guests.buildcache import MissingTool  # noqa: E402
from guests.linux import build as linux_build  # noqa: E402
from guests.xv6 import build as xv6_build  # noqa: E402
from labvmm.expect import Step, Transcript  # noqa: E402

EXPECTED_DIR = HERE / "expected"


def skip_if_missing(call):
    """Call `call()` in a test; skip it, naming the Debian package, if a tool is missing."""
    import pytest

    try:
        return call()
    except MissingTool as e:
        pytest.skip(str(e))
    except FileNotFoundError as e:  # no xv6 source tree (../shared/xv6-riscv)
        pytest.skip(str(e))


class Artifacts:
    """The images sessions boot: built once per process, disks copied fresh per boot."""

    def __init__(self, scratch: Path):
        self.scratch = Path(scratch)
        self._xv6: xv6_build.Xv6Build | None = None
        self._linux: linux_build.LinuxBuild | None = None
        self._disks: tuple[Path, Path] | None = None
        self._copies = 0

    @property
    def xv6(self) -> xv6_build.Xv6Build:
        """The xv6 build (guests/xv6/build.py)."""
        if self._xv6 is None:
            self._xv6 = xv6_build.build()
        return self._xv6

    @property
    def linux(self) -> linux_build.LinuxBuild:
        """The Linux build (guests/linux/build.py)."""
        if self._linux is None:
            self._linux = linux_build.build()
        return self._linux

    def xv6_disk(self) -> Path:
        """A fresh copy of xv6's fs.img (its tests write to it)."""
        self._copies += 1
        return realos.fresh_copy(self.xv6.fs_img, self.scratch / f"xv6-{self._copies}")

    def uboot_disks(self) -> tuple[Path, Path]:
        """The FAT image (virtio slot 0) and the ext4 image (slot 1) of images.py."""
        if self._disks is None:
            self.scratch.mkdir(parents=True, exist_ok=True)
            self._disks = (images.make_fat_image(self.scratch / "fat.img"),
                           images.make_ext4_image(self.scratch / "ext4.img"))
        return self._disks


@dataclasses.dataclass(frozen=True)
class Session:
    """A machine, a script, and which OS's normalization its transcript gets."""

    name: str
    os: str
    boot: Callable[[Artifacts], realos.Boot]
    steps: list[Step]
    slow: bool = False

    def run(self, artifacts: Artifacts) -> Transcript:
        """Boot on QEMU and play the script."""
        return realos.run_on_qemu(self.boot(artifacts), self.steps)

    def run_on_labvmm(self, artifacts: Artifacts, bios: str | None = None) -> Transcript:
        """Boot the same machine on labvmm (with another `bios`, e.g. "labvmm", if given) and play the script."""
        machine = self.boot(artifacts)
        if bios is not None:
            machine = dataclasses.replace(machine, bios=bios)
        return realos.run_on_labvmm(machine, self.steps)

    def expected_path(self) -> Path:
        """Where the normalized QEMU transcript is kept."""
        return EXPECTED_DIR / f"{self.name}.txt"


def _xv6(harts: int) -> Callable[[Artifacts], realos.Boot]:
    return lambda a: realos.xv6_boot(a.xv6.kernel, a.xv6_disk(), harts)


def _uboot(firmware: Path) -> Callable[[Artifacts], realos.Boot]:
    return lambda a: realos.uboot_boot(firmware, a.uboot_disks())


def _linux(harts: int, firmware: Path) -> Callable[[Artifacts], realos.Boot]:
    return lambda a: realos.linux_boot(a.linux.image, harts, firmware)


UBOOT_STEPS = realos.UBOOT_BOOT_STEPS + realos.UBOOT_COMMAND_STEPS + realos.UBOOT_DISK_STEPS
LINUX_STEPS = realos.LINUX_BOOT_STEPS + realos.LINUX_COMMAND_STEPS
SESSIONS = {s.name: s for s in [
    Session("xv6-smp1", "xv6", _xv6(1), realos.XV6_BOOT_STEPS + realos.XV6_COMMAND_STEPS),
    Session("xv6-smp3", "xv6", _xv6(3), realos.XV6_BOOT_STEPS + realos.XV6_COMMAND_STEPS),
    Session("xv6-smp1-usertests", "xv6", _xv6(1), realos.XV6_BOOT_STEPS + realos.XV6_USERTESTS_STEPS, slow=True),
    Session("xv6-smp3-usertests", "xv6", _xv6(3), realos.XV6_BOOT_STEPS + realos.XV6_USERTESTS_STEPS, slow=True),
    Session("uboot-fw_jump", "uboot", _uboot(realos.FW_JUMP), UBOOT_STEPS),
    Session("uboot-fw_dynamic", "uboot", _uboot(realos.FW_DYNAMIC), UBOOT_STEPS),
    # With several harts any of them can become Linux's CPU 0, under fw_dynamic too (a CI run
    # of QEMU booted on hart 3): normalize.py rewrites the hart numbers that follow from it.
    Session("linux-smp1", "linux", _linux(1, realos.FW_DYNAMIC), LINUX_STEPS),
    Session("linux-smp4", "linux", _linux(4, realos.FW_DYNAMIC), LINUX_STEPS),
    Session("linux-smp1-fw_jump", "linux", _linux(1, realos.FW_JUMP), LINUX_STEPS),
]}


def main(argv: list[str] | None = None) -> int:
    """Record or check the expected transcripts of the named sessions (default: all)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["record", "check"])
    parser.add_argument("names", nargs="*", help=f"sessions (default all): {', '.join(SESSIONS)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in SESSIONS]
    if unknown:
        parser.error(f"unknown sessions {unknown}; known: {', '.join(SESSIONS)}")
    failed = []
    with tempfile.TemporaryDirectory() as scratch:
        artifacts = Artifacts(Path(scratch))
        for name in args.names or list(SESSIONS):
            session = SESSIONS[name]
            transcript = session.run(artifacts)
            text = normalize(session.os, transcript.text)
            path = session.expected_path()
            times = ", ".join(f"{k} {v:.2f} s" for k, v in transcript.milestones.items())
            if args.action == "record":
                EXPECTED_DIR.mkdir(exist_ok=True)
                path.write_text(text)
                print(f"{name}: wrote {path.relative_to(ROOT)} ({len(text)} characters; {times})")
            elif not path.is_file() or path.read_text() != text:
                failed.append(name)
                print(f"{name}: differs from {path.relative_to(ROOT)}")
            else:
                print(f"{name}: matches ({times})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
