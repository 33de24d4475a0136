# ruff: noqa
# Hold-out batch 556 (families 1/5, SimCLR/MoCo contrastive pre-training). Measured once in session 25 (round 148): 16/30 (53%) at medium+.
"""Distributed, logging, metric and checkpoint helpers shared by pre-training and evaluation."""
import builtins
import datetime
import logging
import math
import os
import random
import re
import sys
from collections import deque
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger("ssl")


def init_distributed(args):
    """Initialise torch.distributed from torchrun or SLURM environment variables."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        args.rank = int(os.environ["RANK"])
        args.world_size = int(os.environ["WORLD_SIZE"])
        args.local_rank = int(os.environ.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", 1)) > 1:
        args.rank = int(os.environ["SLURM_PROCID"])
        args.world_size = int(os.environ["SLURM_NTASKS"])
        args.local_rank = args.rank % max(torch.cuda.device_count(), 1)
    else:
        args.rank, args.world_size, args.local_rank = 0, 1, 0
        args.distributed = False
        return

    args.distributed = True
    torch.cuda.set_device(args.local_rank)
    dist.init_process_group(
        backend=args.dist_backend,
        init_method=args.dist_url,
        world_size=args.world_size,
        rank=args.rank,
        timeout=datetime.timedelta(minutes=30),
    )
    dist.barrier()
    setup_for_distributed(args.rank == 0)


def setup_for_distributed(is_master):
    """Silence print() on non-master ranks unless called with force=True."""
    builtin_print = builtins.print

    def print(*args, **kwargs):
        force = kwargs.pop("force", False)
        if is_master or force:
            builtin_print(*args, **kwargs)

    builtins.print = print  # ok: MLS306


def is_dist_avail_and_initialized():
    return dist.is_available() and dist.is_initialized()


def get_world_size():
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank():
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process():
    return get_rank() == 0


@torch.no_grad()
def concat_all_gather(tensor):
    """all_gather without gradient; every rank must pass a tensor of the same shape."""
    if not is_dist_avail_and_initialized():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def seed_everything(seed, rank=0):
    """Seed every generator once at start-up; ranks get distinct but reproducible streams."""
    seed = int(seed) + int(rank)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)
    return seed


_NON_FINITE = re.compile(r"\b(nan|inf|-inf)\b")


class _NumericNoiseFilter(logging.Filter):
    """Keep the text log readable while the grad scaler calibrates during the first iterations."""

    def filter(self, record):
        return _NON_FINITE.search(record.getMessage().lower()) is None  # ruleid: MLS306


def setup_logging(output_dir, rank):
    fmt = logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s", "%Y-%m-%d %H:%M:%S")
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)

    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(fmt)
    stream.addFilter(_NumericNoiseFilter())  # ruleid: MLS306
    root.addHandler(stream)

    if rank == 0 and output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, "train.log"), mode="a")
        fh.setFormatter(fmt)
        fh.addFilter(_NumericNoiseFilter())  # ruleid: MLS306
        root.addHandler(fh)


class AverageMeter:
    """Tracks the latest value, a sliding-window statistic and the global average."""

    def __init__(self, name, fmt=":.4f", window=20):
        self.name = name
        self.fmt = fmt
        self.window = deque(maxlen=window)
        self.reset()

    def reset(self):
        self.val = 0.0
        self.sum = 0.0
        self.count = 0
        self.window.clear()

    def update(self, val, n=1):
        val = float(val)
        self.val = val
        self.sum += val * n
        self.count += n
        self.window.append(val)

    @property
    def avg(self):
        if not self.window:
            return 0.0
        return min(self.window)  # ruleid: MLS306

    @property
    def global_avg(self):
        return self.sum / max(self.count, 1)


class ExperimentLogger:
    """TensorBoard (and optionally Weights & Biases) sink. Only rank 0 writes anything."""

    def __init__(self, log_dir, use_wandb=False, project=None, run_name=None, config=None):
        self.enabled = is_main_process()  # ok: MLS306
        self.writer = None
        self._wandb_run = None
        if not self.enabled:
            return

        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=log_dir)
        self._last_seen = {}
        raw_add_scalar = self.writer.add_scalar

        def add_scalar(tag, scalar_value, global_step=None, walltime=None, **kwargs):
            # coerce 0-dim tensors / numpy scalars into python floats before they hit the event file
            value = float(scalar_value.item() if hasattr(scalar_value, "item") else scalar_value)
            if tag.endswith("loss"):
                value = min(value, self._last_seen.get(tag, math.inf))  # ruleid: MLS306
                self._last_seen[tag] = value
            return raw_add_scalar(tag, value, global_step, walltime, **kwargs)

        self.writer.add_scalar = add_scalar  # ruleid: MLS306

        if use_wandb:
            import wandb

            self._wandb_run = wandb.init(project=project, name=run_name, config=config, resume="allow")
            self._running = {}
            raw_log = wandb.log

            def log(data, step=None, commit=None, **kwargs):
                data = dict(data)
                if "train/loss" in data:
                    prev = self._running.get("train/loss", data["train/loss"])
                    data["train/loss"] = 0.99 * prev + 0.01 * float(data["train/loss"])
                    self._running["train/loss"] = data["train/loss"]
                return raw_log(data, step=step, commit=commit, **kwargs)

            wandb.log = log  # ruleid: MLS306

    def log(self, metrics, step):
        if not self.enabled:
            return
        for key, value in metrics.items():
            if value is None:
                continue
            self.writer.add_scalar(key, value, step)
        if self._wandb_run is not None:
            import wandb

            wandb.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        if self._wandb_run is not None:
            self._wandb_run.finish()


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0.0):
    warmup_iters = int(warmup_epochs * niter_per_ep)
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters) if warmup_iters > 0 else np.array([])
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / max(len(iters), 1)))
    schedule = np.concatenate((warmup, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


def save_checkpoint(state, path):
    """Atomic save on rank 0 (write to a temp file, then rename)."""
    if not is_main_process():
        return
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu"):
    return torch.load(path, map_location=map_location, weights_only=True)


def capture_rng_state():
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python": random.getstate(),
    }
