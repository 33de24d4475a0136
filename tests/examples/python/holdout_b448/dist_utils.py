# ruff: noqa
# Hold-out batch 448 (family-focused 1/6, two-tower recommendation with DDP). Measured once in session 19 (round 121): 13/30 (43%) at medium+.
"""Distributed / reproducibility / checkpoint helpers shared by the training scripts."""
from __future__ import annotations

import datetime
import glob
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str = "nccl", timeout_min: int = 30) -> DistInfo:
    """Initialise the default process group from torchrun's environment variables."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        backend = "gloo"
        device = torch.device("cpu")
    dist.init_process_group(
        backend=backend,
        timeout=datetime.timedelta(minutes=timeout_min),
    )
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def reduce_mean(value: float, device: torch.device) -> float:
    t = torch.tensor([value, 1.0], dtype=torch.float64, device=device)
    all_reduce_sum(t)
    return (t[0] / t[1]).item()


def setup_logging(rank: int, level: int = logging.INFO) -> None:
    fmt = f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, format=fmt)


# --------------------------------------------------------------------------- seeding

def set_seed(seed: int, rank: int = 0) -> None:
    """Seed every RNG once at start-up. Python/NumPy get a rank offset so that
    host-side augmentation differs between ranks; torch stays identical so the
    model initialisation matches before DDP broadcasts it anyway."""
    random.seed(seed + rank)
    np.random.seed(seed + rank)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: derive NumPy/Python seeds from torch's per-worker seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def capture_rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": np_state[1].tolist(), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    npd = state["numpy"]
    np.random.set_state(("MT19937", np.asarray(npd["key"], dtype=np.uint32), npd["pos"],
                         npd["has_gauss"], npd["cached"]))
    torch.set_rng_state(state["torch"])  # ok: MLS301
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


# --------------------------------------------------------------------------- checkpoints

_CKPT_RE = re.compile(r"ckpt-(\d+)\.pt$")


def save_checkpoint(path: str, payload: Dict[str, Any], keep_last: int = 3) -> None:
    """Atomic write (tmp + rename) and rotation of old step checkpoints."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)
    logger.info("saved checkpoint %s", path)
    if keep_last <= 0:
        return
    ckpts = sorted(
        (p for p in glob.glob(os.path.join(os.path.dirname(path), "ckpt-*.pt")) if _CKPT_RE.search(p)),
        key=lambda p: int(_CKPT_RE.search(p).group(1)),
    )
    for old in ckpts[:-keep_last]:
        try:
            os.remove(old)
        except OSError as exc:
            logger.warning("could not remove %s: %s", old, exc)


def latest_checkpoint(ckpt_dir: str) -> Optional[str]:
    ckpts = [p for p in glob.glob(os.path.join(ckpt_dir, "ckpt-*.pt")) if _CKPT_RE.search(p)]
    if not ckpts:
        return None
    return max(ckpts, key=lambda p: int(_CKPT_RE.search(p).group(1)))


def load_checkpoint(path: str, device: torch.device, retries: int = 3) -> Dict[str, Any]:
    last_exc: Optional[Exception] = None
    for attempt in range(retries):
        try:
            return torch.load(path, map_location=device, weights_only=True)
        except (OSError, RuntimeError) as exc:  # shared FS hiccups
            last_exc = exc
            logger.warning("load of %s failed (attempt %d/%d): %s", path, attempt + 1, retries, exc)
            time.sleep(2.0 * (attempt + 1))
    raise RuntimeError(f"could not load {path}") from last_exc
