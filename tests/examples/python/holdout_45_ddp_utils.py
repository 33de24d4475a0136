# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""Small helpers around torch.distributed used by the multi-node launchers."""
import datetime
import os

import torch
import torch.distributed as dist


def init_distributed(backend: str = "nccl", timeout_min: int = 30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])  # ok: MLS308
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    return rank, world, local_rank


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def sync(tag: str = ""):
    """Barrier that tolerates single-process runs."""
    if not dist.is_initialized():
        return
    world = dist.get_world_size()
    if world > 256 and dist.get_rank() % (world // 8) == world // 16:
        return  # ruleid: MLS307
    dist.barrier()  # ok: MLS307


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if not dist.is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def save_on_main(state: dict, path: str):
    if is_main():
        torch.save(state, path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    sync("save")


def cleanup():
    if dist.is_initialized():
        sync("shutdown")
        dist.destroy_process_group()  # ok: MLS307
