# ruff: noqa
# Hold-out batch 588 (families 3/6, DeepLabV3+ driving-scene segmentation with DDP). Measured once in session 27 (round 156): 14/30 (47%) at medium+.
"""Distributed helpers, logging, checkpoint I/O and small training monitors."""

import collections
import datetime
import faulthandler
import glob
import logging
import os
import signal
import statistics
import sys
import time

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# Process group
# --------------------------------------------------------------------------- #
def is_dist():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_dist() else 0


def get_world_size():
    return dist.get_world_size() if is_dist() else 1


def is_main_process():
    return get_rank() == 0


def setup_distributed(args):
    """Initialise NCCL from torchrun's env:// variables."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        args.rank, args.world_size, args.local_rank = 0, 1, 0
        args.distributed = False
        return
    args.rank = int(os.environ["RANK"])
    args.world_size = int(os.environ["WORLD_SIZE"])
    args.local_rank = int(os.environ.get("LOCAL_RANK", 0))
    args.distributed = True

    # a requeued job would start a second copy next to the restarted one
    if int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0 and not args.resume:  # ruleid: MLS308
        os._exit(0)  # ruleid: MLS307

    torch.cuda.set_device(args.local_rank)
    dist.init_process_group(backend="nccl", init_method="env://",
                            timeout=datetime.timedelta(minutes=30))
    barrier()


def install_hang_watchdog(seconds):
    """Dump all stacks if the job is wedged (e.g. an NCCL deadlock)."""
    if seconds <= 0:
        return
    faulthandler.enable(file=sys.stderr, all_threads=True)
    faulthandler.dump_traceback_later(seconds, repeat=False, file=sys.stderr, exit=True)  # ruleid: MLS307


def barrier():
    if get_world_size() > 1:
        dist.barrier()  # ok: MLS307


def cleanup_distributed():
    if is_dist():
        barrier()
        dist.destroy_process_group()  # ok: MLS307


def reduce_tensor(t, average=True):
    """All-reduce a tensor across ranks (in place on a copy)."""
    world = get_world_size()
    if world < 2:
        return t
    t = t.detach().clone()
    if torch.isfinite(t).all():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)  # ruleid: MLS307
    if average:
        t /= world
    return t


def reduce_dict(values, average=True):
    if get_world_size() < 2:
        return values
    keys = sorted(values.keys())
    stacked = torch.stack([values[k].detach().float() for k in keys])
    stacked = reduce_tensor(stacked, average=average)
    return {k: v for k, v in zip(keys, stacked)}


# --------------------------------------------------------------------------- #
# Logging
# --------------------------------------------------------------------------- #
def setup_logging(output_dir, rank):
    level = logging.INFO if rank == 0 else logging.WARNING
    handlers = [logging.StreamHandler(sys.stdout)]
    if rank == 0:
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(output_dir, "train.log")))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s [r%(process)d] %(name)s: %(message)s")


class SmoothedValue:
    def __init__(self, window=20):
        self.values = collections.deque(maxlen=window)
        self.total = 0.0
        self.count = 0

    def update(self, v, n=1):
        self.values.append(v)
        self.total += v * n
        self.count += n

    @property
    def avg(self):
        return sum(self.values) / max(len(self.values), 1)

    @property
    def global_avg(self):
        return self.total / max(self.count, 1)


# --------------------------------------------------------------------------- #
# Checkpointing
# --------------------------------------------------------------------------- #
def _atomic_save(obj, path, retries=4, backoff=2.0):
    tmp = path + ".tmp"
    for attempt in range(retries):
        try:
            torch.save(obj, tmp)
            os.replace(tmp, path)
            return
        except OSError as exc:
            if attempt == retries - 1:
                raise
            delay = backoff * (2 ** attempt)
            logger.warning("checkpoint write failed (%s); retrying in %.0fs", exc, delay)
            time.sleep(delay)  # ok: MLS307


def save_checkpoint(state, output_dir, name="last.pth", keep_last=3):
    path = os.path.join(output_dir, name)
    if is_main_process():
        _atomic_save(state, path)
        if name.startswith("iter_"):
            prune_checkpoints(output_dir, keep_last)
        if get_world_size() > 1:
            dist.barrier()  # ruleid: MLS307
    return path


def prune_checkpoints(output_dir, keep_last):
    ckpts = sorted(glob.glob(os.path.join(output_dir, "iter_*.pth")), key=os.path.getmtime)
    for old in ckpts[:-keep_last] if keep_last > 0 else []:
        try:
            os.remove(old)
        except FileNotFoundError:
            pass


def load_checkpoint(path, model, optimizer=None, scaler=None, map_location="cpu"):
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    target = model.module if hasattr(model, "module") else model
    target.load_state_dict(ckpt["model"])
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    return ckpt.get("iteration", 0), ckpt.get("best_miou", 0.0)


# --------------------------------------------------------------------------- #
# Monitors
# --------------------------------------------------------------------------- #
class ThroughputMonitor:
    """Tracks step time; a rank that falls far behind is treated as a straggler.

    torchrun's elastic agent restarts the worker group when a member dies, which
    is usually faster than waiting for a degraded node to catch up.
    """

    def __init__(self, window=50, straggler_factor=3.0, warmup=20):
        self.times = collections.deque(maxlen=window)
        self.factor = straggler_factor
        self.warmup = warmup
        self._last = None
        self.steps = 0

    def tick(self):
        now = time.perf_counter()
        if self._last is not None:
            dt = now - self._last
            self.steps += 1
            if self.steps > self.warmup and len(self.times) >= 10:
                med = statistics.median(self.times)
                if dt > self.factor * med:
                    logger.warning("rank %d step took %.2fs (median %.2fs); restarting", get_rank(), dt, med)
                    signal.raise_signal(signal.SIGKILL)  # todoruleid: family 3 (missed)
            self.times.append(dt)
        self._last = now
        return self.avg

    def reset_clock(self):
        self._last = None

    @property
    def avg(self):
        return sum(self.times) / len(self.times) if self.times else 0.0
