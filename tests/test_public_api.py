"""labvmm's public API is `labvmm.__all__` (as httpx does it): every name exists and is documented."""

from __future__ import annotations

import inspect

import pytest

import labvmm


def public_members(cls) -> list[str]:
    """Names of the methods and properties a class defines itself, without a leading underscore."""
    return [
        name for name, value in vars(cls).items()
        if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, (property, classmethod, staticmethod)))
    ]


def test_all_has_no_duplicates_and_every_name_exists():
    """Each name in __all__ is listed once and importable from labvmm."""
    assert len(labvmm.__all__) == len(set(labvmm.__all__))
    missing = [name for name in labvmm.__all__ if not hasattr(labvmm, name)]
    assert missing == []


def test_the_main_entry_points_are_public():
    """The objects a user starts from are in __all__."""
    assert {"Host", "VM", "VMState", "RunResult", "LabvmmError", "builtin_guests"} <= set(labvmm.__all__)


@pytest.mark.parametrize(
    "name", [n for n in labvmm.__all__ if inspect.isclass(getattr(labvmm, n)) or callable(getattr(labvmm, n))]
)
def test_every_public_class_and_function_has_a_docstring(name):
    """A one-line summary on every public item and on each public method or property of a class."""
    obj = getattr(labvmm, name)
    own_doc = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__  # not inherited
    assert (own_doc or "").strip(), name
    if inspect.isclass(obj):
        undocumented = []
        for member in public_members(obj):
            value = vars(obj)[member]
            target = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
            if not (getattr(target, "__doc__", None) or "").strip():
                undocumented.append(member)
        assert undocumented == [], f"{name}: {undocumented}"


def test_version_is_a_string():
    """__version__ is public and a version string."""
    assert isinstance(labvmm.__version__, str) and labvmm.__version__[0].isdigit()


def test_the_shipped_fakes_are_documented_and_match_what_they_stand_in_for():
    """labvmm.testing's FakeCpu offers only methods the real Vcpu has, each with a docstring."""
    from labvmm import testing
    from labvmm.vcpu import Vcpu

    for name in testing.__all__:
        cls = getattr(testing, name)
        assert (cls.__doc__ or "").strip(), name
        for member in public_members(cls):
            assert (getattr(cls, member).__doc__ or "").strip(), f"{name}.{member}"
    assert [m for m in public_members(testing.FakeCpu) if not hasattr(Vcpu, m)] == []
