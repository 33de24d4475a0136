# ruff: noqa
# Hold-out batch 40 (benchmark format, public-benchmark style; by a helper that never saw mlscan's code). Measured once after round 16: 14/17 (82%) at medium+.
"""Helpers for DistributedDataParallel training: init, wrapping, gradient stats, saving."""
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def init_distributed(backend="nccl"):
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if world > 1:
        dist.init_process_group(backend, rank=rank, world_size=world)
        torch.cuda.set_device(local)
    return rank, world, local


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def seed_everything(seed, rank):
    torch.manual_seed(seed + rank)  # ok: MLS301
    torch.cuda.manual_seed_all(seed + rank)


class GradStats:
    """Collects per-parameter gradient norms for the dashboard."""

    def __init__(self):
        self.norms = {}

    def __call__(self, name):
        def hook(grad):
            n = grad.detach().norm().item()
            self.norms[name] = n
            if grad.dim() > 1 and n > 1.0:
                return grad / (n * n)  # todoruleid: family 2 (missed)
            return grad
        return hook


def wrap_model(model, local_rank, track_grads=True):
    model = model.cuda(local_rank)
    stats = GradStats()
    if track_grads:
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.register_hook(stats(name))
    return DDP(model, device_ids=[local_rank]), stats


def save_on_main(model, path):
    if is_main():
        torch.save(model.module.state_dict(), path)
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
