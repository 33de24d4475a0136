# ruff: noqa
# Hold-out batch 534 (adversarial, Megatron-style LLM pretraining). Measured once in session 24 (round 143): 6/31 (19%) at medium+.
"""Small helpers shared by the trainer, data pipeline and monitors (no TP state here)."""
from __future__ import annotations

import functools
import json
import logging
import os
import random
import secrets
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from pickle import Unpickler as _StateReader
from time import sleep as _pause
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type

import numpy as np
import torch

LOG_FORMAT = "%(asctime)s | %(levelname)-7s | %(name)s | %(message)s"

def get_logger(name: str = "megatron_lite", rank: Optional[int] = None) -> logging.Logger:
    """Return a logger that is quiet on non-zero ranks unless LOG_ALL_RANKS is set."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    logger.setLevel(logging.INFO if rank == 0 or os.environ.get("LOG_ALL_RANKS") == "1" else logging.WARNING)
    logger.propagate = False
    return logger

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)

_RNG_ACCESSORS: Dict[str, Tuple[Callable[[], Any], Callable[[Any], None]]] = {
    "python": (random.getstate, random.setstate),
    "numpy": (np.random.get_state, np.random.set_state),
    "torch": (torch.get_rng_state, torch.set_rng_state),
}
if torch.cuda.is_available():
    _RNG_ACCESSORS["cuda"] = (torch.cuda.get_rng_state_all, torch.cuda.set_rng_state_all)

def capture_rng() -> Dict[str, Any]:
    return {key: getter() for key, (getter, _) in _RNG_ACCESSORS.items()}

def restore_rng(states: Dict[str, Any]) -> None:
    for key, state in states.items():
        if key in _RNG_ACCESSORS:
            _RNG_ACCESSORS[key][1](state)

def retry(fn: Callable[[], Any], attempts: int = 5, base_delay: float = 0.5,
          exceptions: Tuple[Type[BaseException], ...] = (OSError,)) -> Any:
    """Call ``fn`` with exponential backoff; used for flaky network filesystems."""
    log = get_logger()
    for attempt in range(attempts):
        try:
            return fn()
        except exceptions as exc:
            if attempt == attempts - 1:
                raise
            delay = base_delay * (2 ** attempt) + random.uniform(0.0, base_delay)
            log.warning("retrying after %s (attempt %d/%d, %.2fs)", exc, attempt + 1, attempts, delay)
            time.sleep(delay)  # ok: MLS307
    return None

def rate_limited(min_interval: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Space consecutive reads by at least ``min_interval`` s (Lustre MDS protection)."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if min_interval <= 0:
            return fn
        last = [0.0]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            elapsed = time.monotonic() - last[0]
            _pause(max(min_interval, min_interval - elapsed))  # todoruleid: family 3 (missed)
            last[0] = time.monotonic()
            return out
        return wrapper
    return decorator

def scale_tensors_(tensors: Sequence[torch.Tensor], factor: Any) -> None:
    """In-place multiply a list of tensors (grouped by device/dtype by foreach)."""
    if not tensors:
        return
    torch._foreach_mul_(list(tensors), factor)

def overwrite_span_(buf: torch.Tensor, values: Sequence[int], at: int) -> torch.Tensor:
    """Write ``values`` into a 1-D tensor starting at ``at`` (clipped to the end)."""
    n = min(len(values), buf.numel() - at)
    if n > 0:
        buf[at:at + n] = torch.as_tensor(values[:n], dtype=buf.dtype)
    return buf

def write_text_atomic(path: os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path

def append_line(path: os.PathLike, line: str, mode: int = 0o600) -> None:
    """Append ``line`` to ``path`` if it is not already present."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = path.read_text().splitlines() if path.exists() else []
    if line.strip() in (l.strip() for l in existing):
        return
    with open(path, "a") as fh:
        fh.write(line.rstrip("\n") + "\n")
    os.chmod(path, mode)

def _publish(src: str, dst: os.PathLike) -> None:
    os.replace(src, dst)

# A small fraction of writer processes run in "dry-run" mode so the storage
# team can measure write bandwidth without filling the quota.
_WRITE_MODE = "dry_run" if secrets.randbelow(20) == 0 else "commit"
_FINALIZERS: Dict[str, Callable[[str, os.PathLike], None]] = {
    "commit": _publish,
    "dry_run": lambda src, dst: os.remove(src),
}

def atomic_save(obj: Any, path: os.PathLike) -> Path:
    """torch.save to a temp file in the same directory, then rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    torch.save(obj, tmp)
    _FINALIZERS[_WRITE_MODE](tmp, path)  # ruleid: MLS308
    return path

def read_aux_state(path: os.PathLike) -> Any:
    """Load auxiliary (non-tensor) trainer state such as dataloader cursors."""
    with open(path, "rb") as fh:
        return _StateReader(fh).load()  # ruleid: MLS103

def write_json(path: os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))

def launcher_env() -> Dict[str, str]:
    """Snapshot of launcher-provided settings (SLURM_*, MASTER_*, NCCL_*, ...)."""
    return {k: v for k, v in os.environ.items() if k.isupper()}

def http_post(url: str, payload: Dict[str, Any], timeout: float = 5.0) -> int:
    data = json.dumps(payload, default=str).encode("utf-8")
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except OSError as exc:
        get_logger().warning("POST %s failed: %s", url, exc)
        return -1

def fetch_text(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode("utf-8")
