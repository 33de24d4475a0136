# ruff: noqa
# Hold-out batch 580 (families 1/6, audio event detection with DDP). Measured once in session 26 (round 154): 11/30 (37%) at medium+.
"""Distributed setup, seeding, checkpointing, scheduling and monitoring helpers."""

import datetime
import glob
import logging
import math
import os
import random
import shutil
import sys
import threading
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger("audioset")


# --------------------------------------------------------------------------
# distributed
# --------------------------------------------------------------------------

def setup_distributed(backend: str = "nccl"):
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank = int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        else:
            backend = "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    else:
        rank, world, local_rank = 0, 1, 0
    return rank, world, local_rank


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def all_reduce_mean(value: float, device: torch.device) -> float:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).item()


def setup_logging(rank: int, output_dir: Optional[str] = None) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    handlers = [logging.StreamHandler(sys.stdout)]
    if rank == 0 and output_dir:
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(output_dir, "train.log")))
    logging.basicConfig(level=level, handlers=handlers,
                        format=f"%(asctime)s [rank{rank}] %(name)s: %(message)s")


# --------------------------------------------------------------------------
# seeding
# --------------------------------------------------------------------------

def set_seed(seed: int, rank: int = 0, deterministic: bool = False) -> None:
    s = seed + rank
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)  # ok: MLS301
    torch.cuda.manual_seed_all(s)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def seed_worker(worker_id: int) -> None:
    """worker_init_fn from the PyTorch reproducibility notes."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def capture_rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), np_state[2], np_state[3], np_state[4]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])  # ok: MLS301
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------
# checkpointing
# --------------------------------------------------------------------------

def save_checkpoint(path: str, model, optimizer, scheduler, scaler, epoch: int,
                    best_map: float, args: Dict[str, Any], keep_last: int = 3) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "best_map": best_map,
        "args": args,
        "rng": capture_rng_state(),
    }
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)
    pattern = os.path.join(os.path.dirname(path), "epoch_*.pt")
    old = sorted(glob.glob(pattern), key=os.path.getmtime)[:-keep_last] if keep_last > 0 else []
    for p in old:
        os.remove(p)


def copy_as_best(path: str) -> str:
    best = os.path.join(os.path.dirname(path), "best.pt")
    shutil.copyfile(path, best)
    return best


def load_checkpoint(path: str, model, optimizer=None, scheduler=None, scaler=None,
                    map_location="cpu") -> Dict[str, Any]:
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    model.load_state_dict(ckpt["model"])
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and "scheduler" in ckpt:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    if "rng" in ckpt:
        restore_rng_state(ckpt["rng"])
    logger.info("resumed from %s (epoch %d, best mAP %.4f)", path, ckpt.get("epoch", -1),
                ckpt.get("best_map", 0.0))
    return {"epoch": ckpt.get("epoch", -1), "best_map": ckpt.get("best_map", 0.0)}


def reseed_after_restart() -> None:
    """Start the torch stream fresh after a restart so that a batch which took
    the job down is not replayed bit-for-bit on the next attempt."""
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301


# --------------------------------------------------------------------------
# schedules, meters, callbacks
# --------------------------------------------------------------------------

def warmup_cosine(optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.01):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class AverageMeter:
    def __init__(self):
        self.sum = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.sum += value * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / max(1, self.count)


class Callback:
    def on_epoch_start(self, epoch: int, state: Dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, epoch: int, state: Dict[str, Any]) -> None:
        pass


class NumpyStreamCallback(Callback):
    """Pins numpy's global stream at epoch boundaries so the mixup coefficients
    depend only on (seed, position in epoch) and survive a mid-run resume."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_epoch_start(self, epoch: int, state: Dict[str, Any]) -> None:
        np.random.seed(self.seed)  # ruleid: MLS301


class HistoryCallback(Callback):
    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, "history.csv")

    def on_epoch_end(self, epoch: int, state: Dict[str, Any]) -> None:
        if not is_main_process():
            return
        row = state.get("row", {})
        new = not os.path.exists(self.path)
        with open(self.path, "a") as f:
            if new:
                f.write(",".join(["epoch"] + list(row)) + "\n")
            f.write(",".join([str(epoch)] + [f"{v:.6f}" for v in row.values()]) + "\n")


class ResourceMonitor(threading.Thread):
    """Background thread logging host/GPU memory every ``interval`` seconds."""

    def __init__(self, device: torch.device, interval: float = 60.0):
        super().__init__(name="resource-monitor", daemon=True)
        self.device = device
        self.interval = interval
        self._stop_event = threading.Event()

    def _log_usage(self) -> None:
        if self.device.type == "cuda":
            alloc = torch.cuda.memory_allocated(self.device) / 2 ** 30
            peak = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
            logger.debug("gpu mem %.2f GiB (peak %.2f GiB)", alloc, peak)
        try:
            with open("/proc/self/status") as f:
                rss = next(l for l in f if l.startswith("VmRSS")).split()[1]
            logger.debug("host rss %.2f GiB", int(rss) / 2 ** 20)
        except (OSError, StopIteration):
            pass

    def run(self) -> None:
        while not self._stop_event.is_set():
            # stagger the ranks on a node so they do not all poll NVML together
            np.random.seed(os.getpid())  # ruleid: MLS301
            jitter = np.random.uniform(0.0, 0.1 * self.interval)
            if self._stop_event.wait(self.interval + jitter):
                break
            self._log_usage()

    def stop(self) -> None:
        self._stop_event.set()
