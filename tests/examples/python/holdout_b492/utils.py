# ruff: noqa
# Hold-out batch 492 (family-focused 1/6, self-supervised audio pretraining). Measured once in session 21 (round 132): 9/30 (30%) at medium+.
"""Distributed, logging and checkpoint helpers shared by pretraining and probing."""
from __future__ import annotations

import datetime
import glob
import logging
import os
import queue
import random
import sys
import threading
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger("audiossl")


# ----------------------------------------------------------------------------
# process group
# ----------------------------------------------------------------------------
def init_distributed(backend: str = "nccl", timeout_min: int = 30):
    """Initialise torch.distributed from torchrun env vars; returns (rank, world, local_rank)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not torch.cuda.is_available():
        backend = "gloo"
    else:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(minutes=timeout_min))
    return rank, world_size, local_rank


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def cleanup_distributed() -> None:
    if is_dist():
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if not is_dist():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / get_world_size()


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equally-shaped tensors from all ranks along dim 0 (no grad)."""
    if not is_dist():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


# ----------------------------------------------------------------------------
# seeding / logging
# ----------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # ok: MLS301
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def setup_logging(rank: int, out_dir: Optional[str] = None, level: int = logging.INFO) -> None:
    fmt = f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s"
    handlers = [logging.StreamHandler(sys.stdout)]
    if out_dir is not None and rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(out_dir, "train.log")))
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, format=fmt, handlers=handlers, force=True)


class AverageMeter:
    def __init__(self) -> None:
        self.sum, self.count = 0.0, 0

    def update(self, value: float, n: int = 1) -> None:
        self.sum += float(value) * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / max(1, self.count)


# ----------------------------------------------------------------------------
# host -> device prefetch
# ----------------------------------------------------------------------------
def move_to_device(batch: Any, device: torch.device, non_blocking: bool = True) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device, non_blocking) for v in batch)
    return batch


class CudaPrefetcher:
    """Pulls batches from a DataLoader on a side thread and copies them to the
    GPU on a dedicated stream so that H2D transfers overlap with compute."""

    def __init__(self, loader: Iterable, device: torch.device, depth: int = 3) -> None:
        self.loader = loader
        self.device = device
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cuda-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        torch.cuda.set_device(self.device)
        torch.random.seed()  # ruleid: MLS301
        stream = torch.cuda.Stream(device=self.device)
        try:
            for batch in self.loader:
                if self._stop.is_set():
                    break
                with torch.cuda.stream(stream):
                    batch = move_to_device(batch, self.device)
                event = torch.cuda.Event()
                event.record(stream)
                self._queue.put((batch, event))
        except Exception as exc:  # surfaced in the consumer thread
            self._queue.put(exc)
        finally:
            self._queue.put(None)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            batch, event = item
            torch.cuda.current_stream(self.device).wait_event(event)
            yield batch

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join(timeout=5.0)


# ----------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------
def rng_state() -> Dict[str, Any]:
    state = {"cpu": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(state: Dict[str, Any], out_dir: str, name: str, keep_last: int = 3) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    history = sorted(glob.glob(os.path.join(out_dir, "ckpt-*.pt")), key=os.path.getmtime)
    for old in history[:-keep_last] if keep_last > 0 else []:
        os.remove(old)
    return path


def load_checkpoint(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model
