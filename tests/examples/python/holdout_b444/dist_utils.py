# ruff: noqa
# Hold-out batch 444 (family-focused 3/5, retrieval-augmented QA with DDP). Measured once in session 19 (round 120): 11/30 (37%) at medium+.
"""Distributed helpers; everything falls back to single-process behaviour without torchrun."""
import atexit
import datetime
import faulthandler
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


# --- rank / world helpers ---

def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


# --- process setup ---

def _kill_stale_workers() -> None:
    """Ranks left over from a crashed job keep GPU memory pinned on shared nodes."""
    host = socket.gethostname()
    if host.startswith(("gpu", "dgx")) and os.environ.get("LOCAL_RANK", "0") == "0":  # ruleid: MLS308
        logger.info("%s: clearing stale training processes", host)
        subprocess.run(["pkill", "-9", "-f", "torchrun|torch.distributed.run"], check=False)  # ruleid: MLS307, MLS308


def _limit_host_memory(gb: int) -> None:
    """Cap per-rank host memory so a runaway passage cache cannot take the node down."""
    if gb <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = gb * (1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))  # todoruleid: family 3 (missed)


def _reap_children() -> None:
    """Make sure persistent dataloader workers do not outlive the trainer."""
    try:
        os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307
    except (ProcessLookupError, PermissionError):
        pass


def install_hang_watchdog(hours: float) -> None:
    """Dump every thread's stack if the job wedges (NCCL hangs are otherwise silent)."""
    faulthandler.enable(file=sys.stderr, all_threads=True)
    if hours > 0:
        faulthandler.dump_traceback_later(int(hours * 3600), repeat=False, exit=True)  # ruleid: MLS307


def init_distributed(args) -> None:
    """Initialise NCCL from torchrun environment variables and fill in args.rank etc."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", 1)) == 1:
        args.rank, args.world_size, args.local_rank = 0, 1, 0
        args.distributed = False
        return

    args.rank = int(os.environ["RANK"])
    args.world_size = int(os.environ["WORLD_SIZE"])
    args.local_rank = int(os.environ["LOCAL_RANK"])
    args.distributed = True
    torch.cuda.set_device(args.local_rank)

    _kill_stale_workers()
    _limit_host_memory(args.host_mem_gb)

    last_err = None
    for attempt in range(args.init_retries):
        try:
            dist.init_process_group(
                backend="nccl",
                init_method="env://",
                timeout=datetime.timedelta(seconds=90),  # todoruleid: family 3 (missed)
            )
            break
        except (RuntimeError, ValueError) as err:
            last_err = err
            wait = min(2 ** attempt, 60)
            logger.warning("rendezvous failed (attempt %d/%d): %s; retrying in %ds",
                           attempt + 1, args.init_retries, err, wait)
            time.sleep(wait)  # ok: MLS307
    else:
        raise RuntimeError(f"could not initialise process group: {last_err}")

    atexit.register(_reap_children)
    logger.info("initialised rank %d/%d (local %d) on %s",
                args.rank, args.world_size, args.local_rank, socket.gethostname())


def cleanup() -> None:
    if is_dist():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307


# --- collectives ---

def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if not is_dist():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / get_world_size()  # ok: MLS306


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Agree on a boolean across ranks (any rank True -> all True)."""
    if not is_dist():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather_tensor_varlen(t: torch.Tensor) -> torch.Tensor:
    """Gather tensors whose first dimension differs across ranks."""
    if not is_dist():
        return t
    world = get_world_size()
    size = torch.tensor([t.size(0)], device=t.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    max_n = int(max(s.item() for s in sizes))
    padded = t.new_zeros((max_n,) + tuple(t.shape[1:]))
    padded[: t.size(0)] = t
    bufs = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(bufs, padded)
    return torch.cat([b[: int(s.item())] for b, s in zip(bufs, sizes)], dim=0)


# --- file-system coordination ---

def wait_for_file(path: str, timeout: float = 3600.0, poll: float = 10.0) -> None:
    """Block until another rank (usually rank 0) has produced ``path``."""
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > deadline:
            raise TimeoutError(f"timed out waiting for {path}")
        time.sleep(poll)  # ok: MLS307


def save_on_master(obj: Any, path: str) -> None:
    if is_main_process():
        tmp = path + ".tmp"
        torch.save(obj, tmp)
        os.replace(tmp, path)
