"""Real operating systems for the notebooks: xv6, U-Boot and Linux, when this machine can build or has them.

Their recipes live in labvmm's repository, not in the package (guests/realos.py: the
machines; guests/xv6/build.py and guests/linux/build.py: the builds, cached outside the
checkout). A notebook asks for a machine by name and gets a `guests.realos.Boot`, or an
`Unavailable` saying what to install or run, so it can skip that part and still run:

    boot = realos.machine("xv6", folder)      # Boot(...) or Unavailable(reason)
    if boot:
        vm = boot.create_vm(host)
    else:
        print(boot.reason)

The repository is the one labvmm is installed from (`pip install -e .`), or the folder
named by `$LABVMM_CHECKOUT`.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from pathlib import Path

import labvmm

CHECKOUT_ENV = "LABVMM_CHECKOUT"
NAMES = ("xv6", "uboot", "linux")
_NO_CHECKOUT = ("the real operating systems are built by labvmm's repository (guests/realos.py), which this "
                "installation does not have: clone labvmm, `pip install -e '.[lab]'` in it (or set "
                f"${CHECKOUT_ENV} to the clone)")


@dataclasses.dataclass(frozen=True)
class Unavailable:
    """A machine this computer cannot boot now; `reason` says what to install or run. False in an `if`."""

    name: str
    reason: str

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return f"{self.name} is not available: {self.reason}"


def checkout() -> Path | None:
    """The labvmm repository with the real-OS recipes, or None."""
    candidates = [os.environ.get(CHECKOUT_ENV), Path(labvmm.__file__).resolve().parents[1]]
    for folder in candidates:
        if folder and (Path(folder) / "guests" / "realos.py").is_file():
            return Path(folder)
    return None


def _module(name: str):
    """guests.<name> from the checkout (appended to sys.path: an installed labvmm still wins)."""
    root = checkout()
    if root is None:
        raise LookupError(_NO_CHECKOUT)
    if str(root) not in sys.path:
        sys.path.append(str(root))
    return importlib.import_module(f"guests.{name}")


def machine(name: str, folder: str | os.PathLike, *, build: bool = True):
    """The machine `name` ("xv6", "uboot", "linux") as a guests.realos.Boot, or Unavailable.

    `folder` takes scratch copies of disks the guest writes (xv6's fs.img). xv6 is built when
    the cache lacks it (about a minute, once per machine); Linux (several minutes) only with
    `build=True`, and a notebook passes False so that it only uses a kernel built before.

    Raises:
        ConfigError: `name` is not one of NAMES.
    """
    from ..errors import ConfigError

    if name not in NAMES:
        raise ConfigError(f"no real OS named {name!r} (expected one of {', '.join(NAMES)})")
    try:
        realos = _module("realos")
        buildcache = _module("buildcache")
    except LookupError as exc:
        return Unavailable(name, str(exc))
    try:
        if name == "xv6":
            built = _module("xv6.build").build()
            return realos.xv6_boot(built.kernel, realos.fresh_copy(built.fs_img, Path(folder)), 1)
        needs = [(realos.FW_JUMP, realos.OPENSBI_PACKAGE)]  # U-Boot and Linux boot on OpenSBI
        if name == "uboot":
            needs.append((realos.UBOOT, realos.UBOOT_PACKAGE))
        for path, package in needs:
            if not Path(path).is_file():
                return Unavailable(name, f"{path} is missing (Debian package {package})")
        if name == "uboot":
            return realos.uboot_boot()
        linux_build = _module("linux.build")
        done = buildcache.cache_root() / "linux" / linux_build.build_key() / buildcache.DONE_MARKER
        if not build and not done.is_file():
            return Unavailable(name, "Linux is not built yet: run `python guests/linux/build.py` in labvmm's "
                                     "repository once (2 to 5 minutes; the build is cached), then run this again")
        return realos.linux_boot(linux_build.build().image, 1)
    except buildcache.MissingTool as exc:
        return Unavailable(name, str(exc))
    except (FileNotFoundError, RuntimeError) as exc:  # no xv6 source; a build that failed
        return Unavailable(name, str(exc).splitlines()[0])


__all__ = ["NAMES", "Unavailable", "checkout", "machine"]
