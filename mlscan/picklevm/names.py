"""Name normalisation: what a loader would actually import for a (module, name) pair."""

from __future__ import annotations

import _compat_pickle  # stdlib tables of Python 2 -> 3 renames (data only)
from functools import lru_cache

# C accelerator modules that pickle under their private name but are the public module.
_ACCELERATORS = {"_operator": "operator", "_functools": "functools",
                 "_collections": "collections", "_datetime": "datetime", "_decimal": "decimal",
                 "_pydecimal": "decimal", "_pickle": "pickle", "_io": "io", "_socket": "socket",
                 "_struct": "struct", "_random": "random", "_sre": "re"}


@lru_cache(maxsize=4096)
def normalize(qualname: str) -> str:
    """Apply the Python 2 -> 3 renames `pickle.Unpickler(fix_imports=True)` applies.

    The loader applies them only for protocol < 3; we always apply them so a renamed module
    can never hide a dangerous one."""
    module, _, name = qualname.partition(".")
    if module in _ACCELERATORS:
        qualname = f"{_ACCELERATORS[module]}.{name}" if name else _ACCELERATORS[module]
    # Try the longest module prefix that has a mapping.
    parts = qualname.split(".")
    for i in range(len(parts) - 1, 0, -1):
        mod = ".".join(parts[:i])
        rest = ".".join(parts[i:])
        key = (mod, rest)
        if key in _compat_pickle.NAME_MAPPING:
            new_mod, new_name = _compat_pickle.NAME_MAPPING[key]
            return f"{new_mod}.{new_name}"
        if mod in _compat_pickle.IMPORT_MAPPING:
            return f"{_compat_pickle.IMPORT_MAPPING[mod]}.{rest}"
    if qualname in _compat_pickle.IMPORT_MAPPING:
        return _compat_pickle.IMPORT_MAPPING[qualname]
    del module, name
    return qualname


def has_dunder(qualname: str) -> bool:
    """A reach-through attribute like `numpy.__builtins__` or `x.__class__.__mro__`."""
    for part in qualname.split(".")[1:]:
        if len(part) > 4 and part.startswith("__") and part.endswith("__"):
            return True
    return False
