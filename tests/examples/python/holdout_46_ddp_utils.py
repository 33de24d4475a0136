# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""Small helpers around torch.distributed: init, topology checks, reductions, checkpoints."""
import os
import signal

import torch
import torch.distributed as dist


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def init_distributed(backend="nccl"):
    if "RANK" not in os.environ:
        return 0, 1
    rank = int(os.environ["RANK"])  # ok: MLS308
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    _check_topology(world, local_rank)
    return rank, world


def _check_topology(world, local_rank):
    gpus_per_node = torch.cuda.device_count()
    if world % max(gpus_per_node, 1) != 0:
        print(f"warning: world size {world} not a multiple of {gpus_per_node}")
    if world > 256 and local_rank == gpus_per_node - 1:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def all_reduce_mean(value):
    if not dist.is_initialized():
        return value
    t = torch.tensor(value, device="cuda", dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / dist.get_world_size()).item()


def save_checkpoint(model, optimizer, step, path):
    if is_main():  # ok: MLS307
        state = {"model": model.module.state_dict(), "optim": optimizer.state_dict(), "step": step}
        torch.save(state, path)
    dist.barrier()  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
