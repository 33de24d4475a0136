# ruff: noqa
# Hold-out batch 420 (family-focused 2/3, GPT pretraining with FSDP). Measured once in session 17 (round 114): 7/30 (23%) at medium+.
"""Process-group setup/teardown, SLURM integration and the node-health watchdog.

Launch with ``srun python train.py ...`` (one task per GPU) or with ``torchrun``; the
rank layout is read from whichever environment is present.
"""
from __future__ import annotations

import datetime
import faulthandler
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

REQUEUE_EXIT_CODE = 3
WATCHDOG_EXIT_CODE = 86
CHILD_FAILURE_EXIT_CODE = 87


@dataclass
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int
    hostname: str

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank)


def _resolve_master_addr(nodelist: str, attempts: int = 6) -> str:
    """First hostname of the allocation; scontrol can be flaky under load."""
    for attempt in range(attempts):
        try:
            out = subprocess.check_output(["scontrol", "show", "hostnames", nodelist], text=True, timeout=30)
            return out.split()[0]
        except (subprocess.SubprocessError, OSError) as exc:
            delay = min(2.0 ** attempt, 30.0) + random.random()
            logger.warning("scontrol failed (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)  # ok: MLS307
    raise RuntimeError(f"could not resolve master address from {nodelist!r}")


def _read_layout() -> DistInfo:
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun / torchx
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", 0))
        local_world = int(env.get("LOCAL_WORLD_SIZE", torch.cuda.device_count()))
    elif "SLURM_PROCID" in env:
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        local_rank = int(env["SLURM_LOCALID"])
        local_world = int(env.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0])
        env.setdefault("MASTER_ADDR", _resolve_master_addr(env["SLURM_JOB_NODELIST"]))
        # deterministic port per job so requeued jobs do not collide with stale sockets
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
    else:
        rank, world, local_rank, local_world = 0, 1, 0, 1
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", "29500")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, local_world_size=local_world,
                    node_rank=rank // max(local_world, 1), hostname=socket.gethostname())


def init_distributed(timeout_min: int = 30, backend: str = "nccl") -> DistInfo:
    info = _read_layout()
    os.environ["RANK"] = str(info.rank)
    os.environ["WORLD_SIZE"] = str(info.world_size)
    os.environ["LOCAL_RANK"] = str(info.local_rank)
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    os.environ.setdefault("NCCL_IB_TIMEOUT", "22")
    if info.world_size > 64:
        # keep the communicator alive across transient fabric errors on large jobs
        os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "0"  # ruleid: MLS307
    torch.cuda.set_device(info.local_rank)
    timeout = datetime.timedelta(0, timeout_min)  # ruleid: MLS307
    dist.init_process_group(backend=backend, init_method="env://", rank=info.rank,
                            world_size=info.world_size, timeout=timeout)
    logger.info("rank %d/%d on %s (local %d) initialised, master %s:%s", info.rank, info.world_size,
                info.hostname, info.local_rank, os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"])
    dist.barrier(device_ids=[info.local_rank])
    return info


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307


# ----------------------------------------------------------------- preemption
class PreemptionHandler:
    """Turns SLURM's pre-timeout signal (``#SBATCH --signal=USR1@180``) into a flag.

    The training loop polls :meth:`should_stop` at step boundaries, writes a
    checkpoint, calls :meth:`requeue` and exits with ``REQUEUE_EXIT_CODE``.
    """

    def __init__(self, info: DistInfo):
        self.info = info
        self._event = threading.Event()
        self._shutting_down = False
        signal.signal(signal.SIGUSR1, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGCHLD, self._on_child_exit)

    def _on_signal(self, signum, frame) -> None:
        logger.warning("rank %d received %s; will checkpoint at next step boundary",
                       self.info.rank, signal.Signals(signum).name)
        self._event.set()

    def _on_child_exit(self, signum, frame) -> None:
        # a dead dataloader worker otherwise surfaces much later as a hang in next()
        if self._shutting_down:
            return
        logger.error("child process exited on %s (rank %d); aborting", self.info.hostname, self.info.rank)
        os._exit(CHILD_FAILURE_EXIT_CODE)  # ruleid: MLS307

    def should_stop(self, device: torch.device) -> bool:
        flag = torch.tensor([1 if self._event.is_set() else 0], device=device)
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def requeue(self) -> None:
        job_id = os.environ.get("SLURM_JOB_ID")
        if not self.info.is_master or job_id is None:
            return
        self._shutting_down = True
        logger.info("requeueing SLURM job %s", job_id)
        subprocess.run(["scontrol", "requeuehold", job_id], check=False, timeout=60)  # todoruleid: family 3 (missed)

    def shutdown(self) -> None:
        self._shutting_down = True


class WallClockGuard:
    """Leaves the allocation before SLURM's hard limit when no signal was configured."""

    def __init__(self, margin_min: float = 10.0):
        end = os.environ.get("SLURM_JOB_END_TIME")
        self.deadline: Optional[float] = float(end) - margin_min * 60.0 if end else None

    def check(self, step: int, info: DistInfo) -> None:
        if self.deadline is None or time.time() < self.deadline:
            return
        if info.is_master:
            logger.warning("allocation ends in < margin at step %d; exiting", step)
        sys.exit(REQUEUE_EXIT_CODE)  # todoruleid: family 3 (missed)


# ------------------------------------------------------------------- watchdog
class NodeHealthWatchdog(threading.Thread):
    """Background thread that kills a rank which stopped making progress.

    A hung NCCL collective never returns to Python, so the main thread cannot
    notice; this thread dumps all stacks and exits so SLURM / the elastic agent
    can restart the job from the last checkpoint.
    """

    def __init__(self, info: DistInfo, heartbeat_timeout_s: float = 1800.0, poll_s: float = 30.0,
                 gpu_poll_s: float = 300.0, frag_ratio: float = 1.5):
        super().__init__(name="node-health-watchdog", daemon=True)
        self.info = info
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.poll_s = poll_s
        self.gpu_poll_s = gpu_poll_s
        self.frag_ratio = frag_ratio
        self._last_beat = time.monotonic()
        self._last_gpu_poll = 0.0
        self._stop_event = threading.Event()
        self.last_step = -1

    def beat(self, step: int) -> None:
        self._last_beat = time.monotonic()
        self.last_step = step

    def stop(self) -> None:
        self._stop_event.set()

    def _query_gpu(self) -> None:
        cmd = ["nvidia-smi", "-i", str(self.info.local_rank), "--format=csv,noheader,nounits",
               "--query-gpu=ecc.errors.uncorrected.volatile.total,temperature.gpu,clocks_throttle_reasons.hw_slowdown"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
        except (subprocess.SubprocessError, OSError) as exc:
            logger.debug("nvidia-smi failed: %s", exc)
            return
        fields = [f.strip() for f in out.split(",")]
        if len(fields) == 3 and fields[0].isdigit() and int(fields[0]) > 0:
            logger.error("uncorrected ECC errors on %s gpu %d: %s", self.info.hostname, self.info.local_rank, fields[0])

    def run(self) -> None:
        device = self.info.device
        while not self._stop_event.wait(self.poll_s):
            stale = time.monotonic() - self._last_beat
            if stale > self.heartbeat_timeout_s:
                logger.error("rank %d on %s: no progress for %.0fs (last step %d); dumping stacks",
                             self.info.rank, self.info.hostname, stale, self.last_step)
                faulthandler.dump_traceback(all_threads=True)
                os._exit(WATCHDOG_EXIT_CODE)  # ok: MLS307
            allocated = torch.cuda.memory_allocated(device)
            reserved = torch.cuda.memory_reserved(device)
            if allocated > 0 and reserved > self.frag_ratio * allocated:
                logger.error("allocator fragmentation on %s: reserved %.1f GiB vs allocated %.1f GiB",
                             self.info.hostname, reserved / 2 ** 30, allocated / 2 ** 30)
                os.kill(os.getpid(), signal.SIGKILL)  # todoruleid: family 3 (missed)
            if time.monotonic() - self._last_gpu_poll > self.gpu_poll_s:
                self._last_gpu_poll = time.monotonic()
                self._query_gpu()
