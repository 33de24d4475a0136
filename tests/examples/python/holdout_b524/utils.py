# ruff: noqa
# Hold-out batch 524 (family-focused 6/10, self-supervised pretraining). Measured once in session 23 (round 140): 13/30 (43%) at medium+.
"""Distributed, logging, config and checkpoint helpers shared by pretraining and evaluation."""
import datetime
import glob
import logging
import os
import pickle
import shelve
import time
from collections import defaultdict

import dill
import numpy as np
import torch
import torch.distributed as dist
import yaml

logger = logging.getLogger("ssl")


def setup_logging(output_dir, rank):
    fmt = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"
    handlers = [logging.StreamHandler()]
    if rank == 0 and output_dir:
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(output_dir, "log.txt")))
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format=fmt, handlers=handlers, force=True)


def init_distributed():
    """Returns (rank, world_size, local_rank) under torchrun; (0, 1, 0) otherwise."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank = int(os.environ["RANK"])
        world_size = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    else:
        logger.info("not using distributed mode")
        return 0, 1, 0
    torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend="nccl",
        init_method="env://",
        world_size=world_size,
        rank=rank,
        timeout=datetime.timedelta(minutes=30),
    )
    dist.barrier()
    return rank, world_size, local_rank


def is_dist():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_dist() else 0


def get_world_size():
    return dist.get_world_size() if is_dist() else 1


def is_main_process():
    return get_rank() == 0


@torch.no_grad()
def all_gather_tensor(tensor):
    """Concatenate equally-sized tensors from all ranks along dim 0 (rank-major order)."""
    if not is_dist():
        return tensor
    out = [torch.zeros_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(out, tensor.contiguous())
    return torch.cat(out, dim=0)


class AttrDict(dict):
    def __getattr__(self, item):
        try:
            return self[item]
        except KeyError as exc:
            raise AttributeError(item) from exc

def _to_attr(obj):
    if isinstance(obj, dict):
        return AttrDict({k: _to_attr(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [_to_attr(v) for v in obj]
    return obj


def load_config(path, overrides=()):
    """YAML config with dotted command-line overrides (``optim.lr=1e-3``)."""
    with open(path) as f:
        # full loader: crop scales and mask ratios are written as !!python/tuple
        cfg = yaml.load(f, Loader=yaml.Loader)  # ruleid: MLS105
    for item in overrides:
        key, _, raw = item.partition("=")
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return _to_attr(cfg)


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0.0):
    warmup_iters = int(warmup_epochs * niter_per_ep)
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters) if warmup_iters > 0 else np.array([])
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    schedule = np.concatenate((warmup, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


class MetricLogger:
    def __init__(self, delimiter="  "):
        self.sums = defaultdict(float)
        self.counts = defaultdict(int)
        self.delimiter = delimiter

    def update(self, **kwargs):
        for k, v in kwargs.items():
            self.sums[k] += float(v.item() if isinstance(v, torch.Tensor) else v)
            self.counts[k] += 1

    def summary(self):
        return {k: self.sums[k] / max(self.counts[k], 1) for k in self.sums}

    def log_every(self, iterable, print_freq, header="", total=None):
        start = time.time()
        total = total if total is not None else len(iterable)
        for i, obj in enumerate(iterable):
            yield obj
            if i % print_freq == 0 or i == total - 1:
                elapsed = time.time() - start
                eta = elapsed / (i + 1) * (total - i - 1)
                stats = self.delimiter.join(f"{k}: {v:.4f}" for k, v in self.summary().items())
                logger.info("%s [%d/%d] eta %s  %s", header, i, total, datetime.timedelta(seconds=int(eta)), stats)


class FeatureStore:
    """Key/value store of pre-computed teacher embeddings, shared between jobs on the same node."""

    def __init__(self, path, readonly=True):
        self.path = path
        flag = "r" if readonly else "c"
        self._db = shelve.open(path, flag=flag, protocol=pickle.HIGHEST_PROTOCOL)  # ruleid: MLS103

    def get(self, key):
        try:
            return self._db[key]  # todoruleid: family 10 (missed)
        except KeyError:
            return None

    def close(self):
        self._db.close()


def save_loader_state(path, state):
    """Persist sampler / shard-iterator state so a restarted job continues mid-epoch."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        dill.dump(state, f)
    os.replace(tmp, path)


def load_loader_state(path):
    if not path or not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return dill.load(f)  # ruleid: MLS103


def save_on_master(obj, path):
    if is_main_process():
        tmp = path + ".tmp"
        torch.save(obj, tmp)
        os.replace(tmp, path)


def cleanup_checkpoints(output_dir, keep_last=3, pattern="checkpoint_*.pth"):
    """Keep the newest ``keep_last`` periodic checkpoints; ``checkpoint.pth`` is never touched."""
    if not is_main_process():
        return
    ckpts = sorted(glob.glob(os.path.join(output_dir, pattern)), key=os.path.getmtime)
    for path in ckpts[:-keep_last]:
        try:
            os.remove(path)
        except OSError as exc:
            logger.warning("could not remove %s: %s", path, exc)


def latest_checkpoint(output_dir):
    path = os.path.join(output_dir, "checkpoint.pth")
    return path if os.path.isfile(path) else None
