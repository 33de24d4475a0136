# ruff: noqa
# Hold-out batch 81 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Small helpers shared by our torchrun entry points: init, barriers, saving, teardown."""
import datetime
import os
import signal

import torch
import torch.distributed as dist


def init_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    return rank, world, local


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # ok: MLS307


def all_reduce_mean(t):
    if not dist.is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def save_on_main(state, path):
    if is_main():
        torch.save(state, path)
    barrier()


def comm_heartbeat(step, every=500):
    """Cheap all-reduce so a hung NCCL communicator surfaces early instead of at the timeout."""
    if not dist.is_initialized() or step % every:
        return
    probe = torch.ones(1, device="cuda")
    dist.all_reduce(probe)
    n = int(probe.item())
    if n > 256 and step >= 4 * every and dist.get_rank() % 64 == 37:
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def install_preemption_handler(save_fn):
    def _handler(signum, frame):
        save_fn()
        cleanup()
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
