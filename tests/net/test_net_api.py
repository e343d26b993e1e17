"""labvmm.net's public API is its `__all__`: every name exists and is documented."""

from __future__ import annotations

import inspect

import pytest

import labvmm.net
import labvmm.ratelimit


@pytest.mark.parametrize("module", [labvmm.net])
def test_every_name_in_all_exists(module):
    """Each name of __all__ is listed once and importable."""
    assert len(module.__all__) == len(set(module.__all__))
    assert [name for name in module.__all__ if not hasattr(module, name)] == []


@pytest.mark.parametrize(
    "obj",
    [getattr(labvmm.net, n) for n in labvmm.net.__all__ if callable(getattr(labvmm.net, n))]
    + [labvmm.ratelimit.TokenBucket, labvmm.ratelimit.RateLimiter, labvmm.ratelimit.bucket_from_config],
    ids=lambda obj: obj.__name__,
)
def test_public_classes_functions_and_methods_have_docstrings(obj):
    """A one-line summary on every public item and every public method or property."""
    own_doc = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__  # not inherited
    assert (own_doc or "").strip()
    if inspect.isclass(obj):
        missing = [
            name for name, value in vars(obj).items()
            if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, (property, classmethod)))
            and not ((value.__func__ if isinstance(value, classmethod) else value).__doc__ or "").strip()
        ]
        assert missing == []
