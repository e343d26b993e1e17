"""The built-in guests: images built from guests/ sources, addressable by name.

The images and their manifest (guests/images/manifest.json, written by guests/build.py)
ship inside the package as `labvmm.images`, so a user needs no cross compiler. The hostile
guests that test the isolation promise ship beside them as `labvmm.images.hostile` (their
own manifest, not listed as built-in guests) and resolve by `hostile/<name>`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import ImageError


HOSTILE_PREFIX = "hostile/"


@dataclass(frozen=True)
class GuestInfo:
    """One built-in guest as the manifest describes it."""

    name: str
    path: Path
    description: str = ""
    privilege: str = "M"
    params: dict[str, int] = field(default_factory=dict)
    #: For hostile guests: what the VMM must make of it (outcome, isolation event, action), from the manifest.
    expect: dict = field(default_factory=dict)

    def __fspath__(self) -> str:
        """The image's path, so a GuestInfo goes wherever an image path does."""
        return str(self.path)


def package_data_dir(package: str, marker: str, checkout_path: str) -> Path:
    """The folder of a data package (`package`, holding `marker`) installed, else in the checkout."""
    try:
        folder = Path(str(resources.files(package)))
        if (folder / marker).exists():
            return folder
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / checkout_path


def images_dir() -> Path:
    """Folder holding the built-in images (installed package data, or the source tree)."""
    return package_data_dir("labvmm.images", "manifest.json", "guests/images")


def builtin_guests() -> dict[str, GuestInfo]:
    """Every built-in guest by name, in manifest order."""
    return _read_manifest(images_dir())


def hostile_guests() -> dict[str, GuestInfo]:
    """Every hostile guest (guests/hostile/) by name, in manifest order; resolve them as `hostile/<name>`."""
    return _read_manifest(images_dir() / "hostile")


def _read_manifest(folder: Path) -> dict[str, GuestInfo]:
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return {}
    entries = json.loads(manifest.read_text())
    if isinstance(entries, dict):
        entries = entries.get("images", list(entries.values()))
    out = {}
    for e in entries:
        name = e["name"]
        params = e.get("params", {})
        if isinstance(params, list):
            params = {p["name"]: p.get("default", 0) for p in params}
        out[name] = GuestInfo(
            name=name,
            path=folder / f"{name}.elf",
            description=e.get("description", ""),
            privilege=str(e.get("privilege", "M")).upper(),
            params=dict(params),
            expect=dict(e.get("expect") or {}),
        )
    return out


def resolve(name_or_path: str | os.PathLike) -> tuple[str, Path, GuestInfo | None]:
    """(VM name, image path, info or None) for a built-in name, an image path or a GuestInfo.

    A GuestInfo (a built-in guest, or one `labvmm.toolchain.compile_guest` made) keeps its
    name and privilege, so an S-mode guest gets labvmm as its firmware by default.
    """
    if isinstance(name_or_path, GuestInfo):
        return name_or_path.name, name_or_path.path, name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ImageError(
            f"a guest is named by a built-in guest name or an image path, got {type(name_or_path).__name__} "
            f"{name_or_path!r}"
        )
    text = os.fspath(name_or_path)
    if not isinstance(text, str):
        raise ImageError(f"an image path must be text, got {text!r}")
    guests = builtin_guests()
    if text in guests and not os.path.exists(text):
        info = guests[text]
        return info.name, info.path, info
    if text.startswith(HOSTILE_PREFIX) and not os.path.exists(text):
        hostile = hostile_guests()
        info = hostile.get(text[len(HOSTILE_PREFIX):])
        if info is None:
            known = ", ".join(hostile) or "none (guests/images/hostile is empty)"
            raise ImageError(f"no hostile guest named {text!r} (hostile guests: {known})")
        return info.name, info.path, info
    if os.path.exists(text) or os.sep in text or text.endswith((".elf", ".bin", ".img")):
        return Path(text).stem or "vm", Path(text), None
    known = ", ".join(guests) or "none (guests/images is empty)"
    raise ImageError(f"no guest image file or built-in guest named {text!r} (built-in guests: {known})")
