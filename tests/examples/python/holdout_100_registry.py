# ruff: noqa
# Hold-out batch 100 (shared training library internals). Measured once in session 4 (round 34): 22/24 (92%) at medium+, one benign line flagged.
"""Generic component registry used for models, datasets, losses and callbacks.

Components register themselves with ``@MODELS.register("name")``; third-party
packages can contribute components through the ``mltk.plugins`` entry-point group.
"""
from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any, Callable, Dict, Iterable, Optional, TypeVar

import yaml

log = logging.getLogger(__name__)
T = TypeVar("T")


class Registry:
    def __init__(self, name: str) -> None:
        self.name = name
        self._items: Dict[str, Callable[..., Any]] = {}

    def register(self, key: Optional[str] = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            k = key or getattr(obj, "__name__")
            if k in self._items:
                raise KeyError(f"{self.name}: '{k}' already registered")
            self._items[k] = obj
            return obj
        return deco

    def get(self, key: str) -> Callable[..., Any]:
        if key in self._items:
            return self._items[key]
        if ":" in key:  # "package.module:ClassName" escape hatch for one-off experiments
            mod_name, attr = key.split(":", 1)
            return getattr(importlib.import_module(mod_name), attr)  # benign look-alike
        raise KeyError(f"{self.name}: unknown '{key}', have {sorted(self._items)}")

    def build(self, cfg: Dict[str, Any]) -> Any:
        cfg = dict(cfg)
        return self.get(cfg.pop("type"))(**cfg)


MODELS, DATASETS, LOSSES, CALLBACKS = (Registry(n) for n in ("models", "datasets", "losses", "callbacks"))


def import_modules(names: Iterable[str]) -> None:
    """Import modules listed under ``imports:`` in a config so their decorators run."""
    for name in names:
        importlib.import_module(name)  # benign look-alike


def load_plugins(group: str = "mltk.plugins") -> None:
    for ep in entry_points(group=group):
        try:
            ep.load()  # benign look-alike
            log.info("loaded plugin %s", ep.name)
        except Exception:  # a broken plugin must not take the trainer down
            log.exception("plugin %s failed to load", ep.name)


def load_config(path: str) -> Dict[str, Any]:
    with open(path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    import_modules(cfg.get("imports", []))
    return cfg
