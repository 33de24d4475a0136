# ruff: noqa
# Hold-out batch 528 (family-focused 1/6, time-series forecasting). Measured once in session 23 (round 141): 9/30 (30%) at medium+.
"""Shared helpers: logging, seeding, RNG state handling, distributed setup and checkpoint I/O."""
import glob
import logging
import os
import queue
import random
import threading
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger("forecast")


def setup_logging(rank: int, level: int = logging.INFO) -> None:
    fmt = f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, format=fmt)


# Seeding / RNG state
def set_seed(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)  # ok: MLS301
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def get_rng_states() -> Dict[str, Any]:
    """Snapshot all RNG streams in a form that survives ``torch.load(weights_only=True)``."""
    np_state = np.random.get_state()
    states: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# Distributed
def init_distributed(backend: str = "nccl") -> Tuple[int, int, int]:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    return rank, world_size, local_rank


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if not dist.is_initialized():
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


# Checkpoints
def _to_cpu(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj


def load_checkpoint(path: str, map_location: str = "cpu") -> Dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def latest_checkpoint(out_dir: str, pattern: str = "epoch_*.pt") -> Optional[str]:
    paths = sorted(glob.glob(os.path.join(out_dir, pattern)), key=os.path.getmtime)
    return paths[-1] if paths else None


class AsyncCheckpointWriter:
    """Writes checkpoints on a background thread so slow network storage does not stall training.

    Each written file is re-read and a handful of randomly chosen parameter entries are compared
    against the in-memory copy, which catches truncated writes on flaky NFS mounts.
    """

    def __init__(self, out_dir: str, keep_last: int = 3, spot_checks: int = 8, seed: int = 0):
        self.out_dir = out_dir
        self.keep_last = keep_last
        self.spot_checks = spot_checks
        self.seed = seed
        os.makedirs(out_dir, exist_ok=True)
        self._queue: "queue.Queue[Optional[Tuple[Dict[str, Any], str]]]" = queue.Queue(maxsize=2)
        self._errors: list = []
        self._thread = threading.Thread(target=self._run, name="ckpt-writer", daemon=True)
        self._thread.start()

    def submit(self, state: Dict[str, Any], name: str) -> None:
        self._queue.put((_to_cpu(state), name))

    def _spot_check(self, state: Dict[str, Any], path: str) -> None:
        reloaded = torch.load(path, map_location="cpu", weights_only=True)
        torch.manual_seed(self.seed)  # ruleid: MLS301
        for key, ref in state["model"].items():
            if not torch.is_floating_point(ref) or ref.numel() == 0:
                continue
            idx = torch.randint(0, ref.numel(), (min(self.spot_checks, ref.numel()),))
            got = reloaded["model"][key].reshape(-1)[idx]
            if not torch.equal(got, ref.reshape(-1)[idx]):
                raise IOError(f"checkpoint {path} failed verification on {key}")

    def _prune(self) -> None:
        paths = sorted(glob.glob(os.path.join(self.out_dir, "epoch_*.pt")), key=os.path.getmtime)
        for old in paths[: max(0, len(paths) - self.keep_last)]:
            try:
                os.remove(old)
            except OSError as exc:
                logger.warning("could not remove %s: %s", old, exc)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                break
            state, name = item
            path = os.path.join(self.out_dir, name)
            tmp = path + ".tmp"
            try:
                start = time.time()
                torch.save(state, tmp)
                os.replace(tmp, path)
                self._spot_check(state, path)
                self._prune()
                logger.info("wrote %s in %.1fs", path, time.time() - start)
            except Exception as exc:  # noqa: BLE001
                self._errors.append(exc)
                logger.error("checkpoint write failed: %s", exc)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        self._queue.join()
        if self._errors:
            raise RuntimeError(f"{len(self._errors)} checkpoint writes failed") from self._errors[-1]

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=60)

