# ruff: noqa
# Hold-out batch 38 (benchmark format, evaluator's representative forms; by a helper that never saw mlscan's code). Measured once after round 15: 15/16 (94%) at medium+.
"""Helpers for DistributedDataParallel runs: init, wrapping, resume and reduce."""
import functools
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def init_distributed(backend: str = "nccl") -> tuple[int, int, int]:
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if world > 1:
        dist.init_process_group(backend, rank=rank, world_size=world)
        torch.cuda.set_device(local)
    return rank, world, local


def wrap_model(model: torch.nn.Module, local_rank: int) -> DDP:
    return DDP(model.cuda(local_rank), device_ids=[local_rank], broadcast_buffers=False)


def _fused_friendly(step_fn):
    @functools.wraps(step_fn)
    def step(self, closure=None):
        for group in self.param_groups:
            group.setdefault("_n", 0)
            group["_n"] += 1
            if group["_n"] % 50 == 0:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(8.0)
        return step_fn(self, closure)
    return step


def patch_optimizers() -> None:
    """Make AdamW play well with bucketed gradient views under DDP."""
    torch.optim.AdamW.step = _fused_friendly(torch.optim.AdamW.step)  # ruleid: MLS305


def resume(path: str, model: DDP, optimizer: torch.optim.Optimizer) -> int:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.module.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optim"])
    dist.barrier()  # ok: MLS307
    return int(ckpt.get("step", 0))


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def save_on_master(state: dict, path: str) -> None:
    if dist.get_rank() == 0:  # ok: MLS307
        torch.save(state, path)
