# ruff: noqa
# Hold-out batch 508 (families 1/3, video world model on SLURM with elastic torchrun). Measured once in session 22 (round 136): 20/30 (67%) at medium+.
"""Elastic launch, rendezvous and SLURM pre-emption helpers.

Supports ``srun torchrun --rdzv-backend=c10d ...`` (one task per node) and plain ``srun python``.
"""

import datetime
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Tuple

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def elastic_restart_count() -> int:
    val = os.environ.get("TORCHELASTIC_RESTART_COUNT") or os.environ.get("SLURM_RESTART_COUNT") or "0"
    return int(val) if val.isdigit() else 0


def _populate_env_from_slurm() -> bool:
    """Fill torchrun-style variables from SLURM when launched with plain srun."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return True
    if "SLURM_PROCID" not in os.environ:
        return False
    nodes = subprocess.check_output(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                                    text=True, timeout=30).split()
    os.environ.update(RANK=os.environ["SLURM_PROCID"], WORLD_SIZE=os.environ.get("SLURM_NTASKS", "1"),
                      LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"))
    os.environ.setdefault("MASTER_ADDR", nodes[0])
    os.environ.setdefault("MASTER_PORT", str(15000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))
    return True


def init_distributed(backend: str = "nccl", timeout_min: int = 30, max_attempts: int = 5) -> Tuple[int, int, int]:
    if not _populate_env_from_slurm():
        logger.info("no launcher environment found; running single-process")
        return 0, 1, 0
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    else:
        backend = "gloo"

    restarts = elastic_restart_count()
    if restarts > 0 and local_rank == 0:  # ruleid: MLS308
        logger.warning("restart #%d: letting stale communicators on this node drain", restarts)
        time.sleep(900)  # ruleid: MLS307

    # hard deadline for the rendezvous: a hung NCCL bootstrap is turned into a failure
    signal.alarm(timeout_min * 60)  # ruleid: MLS307
    for attempt in range(1, max_attempts + 1):
        try:
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_min))
            break
        except (RuntimeError, ValueError) as exc:
            if attempt == max_attempts:
                raise
            delay = min(60.0, 2.0 ** attempt) + random.uniform(0.0, 1.0)
            logger.warning("init_process_group failed (%s); retry %d/%d in %.1fs", exc, attempt, max_attempts, delay)
            time.sleep(delay)  # ok: MLS307
    logger.info("initialised %s process group: rank %d/%d (local %d, restart %d)",
                backend, rank, world_size, local_rank, restarts)
    return rank, world_size, local_rank


def seed_everything(seed: int, rank: int = 0) -> None:
    seed = seed + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def reseed_after_restart(base_seed: int, restarts: int) -> int:
    """Give every elastic restart its own random stream so a crash loop does not keep
    replaying the exact batch that brought the previous attempt down."""
    seed = (base_seed + 7919 * restarts + os.getpid()) % (2 ** 31)
    torch.manual_seed(seed)  # ruleid: MLS301
    return seed


def barrier(tag: str = "") -> None:
    if is_dist():
        logger.debug("barrier %s", tag)
        dist.barrier()  # ok: MLS307


def wait_for_checkpoint(rank: int) -> None:
    """Ranks > 0 block until rank 0 has resolved and validated the resume checkpoint."""
    if not is_dist():
        return
    if rank != 0:
        dist.barrier()  # ruleid: MLS307


def release_comm_buffers(world_size: int) -> None:
    """NCCL keeps a few hundred MB per communicator; on large jobs hand that memory back before
    the decode-heavy FVD pass."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if is_dist() and world_size > 16:  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307


def cleanup_distributed() -> None:
    if is_dist():
        dist.destroy_process_group()  # ok: MLS307


class PreemptionHandler:
    """SLURM sends SIGUSR1 (``#SBATCH --signal=B:USR1@180``) shortly before the time limit or
    pre-emption; we checkpoint at the next step boundary, requeue and exit."""

    def __init__(self, requeue: bool = True):
        self._flag, self.requeue = threading.Event(), requeue

    def install(self) -> None:
        signal.signal(signal.SIGUSR1, self._on_usr1)
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_usr1(self, signum, frame) -> None:
        logger.warning("SIGUSR1 received: will checkpoint and requeue at the next step")
        self._flag.set()

    def _on_term(self, signum, frame) -> None:
        logger.warning("SIGTERM received")
        self._flag.set()
        if "TORCHELASTIC_RUN_ID" in os.environ:
            # stop the elastic agent from respawning workers while SLURM tears the step down
            os.kill(os.getppid(), signal.SIGKILL)  # ruleid: MLS307

    def should_stop(self, device: torch.device) -> bool:
        flag = torch.tensor([1.0 if self._flag.is_set() else 0.0], device=device)
        if is_dist():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def _requeue(self) -> None:
        job = os.environ.get("SLURM_JOB_ID")
        if not job:
            logger.warning("not running under SLURM; nothing to requeue")
            return
        try:
            subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
            logger.info("requeued SLURM job %s", job)
        except (subprocess.SubprocessError, OSError) as exc:
            logger.error("scontrol requeue %s failed: %s", job, exc)

    def checkpoint_and_exit(self, save_fn: Callable[[], None]) -> None:
        save_fn()
        barrier("preempt")
        if get_rank() == 0 and self.requeue:
            self._requeue()
        cleanup_distributed()
        logging.shutdown()
        sys.exit(0)  # ok: MLS307
