# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""torchrun helpers: process-group setup, preemption-safe checkpointing, teardown."""
import datetime
import os
import signal
import sys

import torch
import torch.distributed as dist


def init_distributed(base_seed=0, timeout_min=30):
    rank = int(os.environ["RANK"])  # ok: MLS308
    local_rank = int(os.environ["LOCAL_RANK"])
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # benign look-alike
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl", timeout=datetime.timedelta(minutes=timeout_min))
    torch.manual_seed(base_seed + rank)  # ok: MLS301
    return rank, local_rank, dist.get_world_size()


def save_checkpoint(path, model, optimizer, step):
    if dist.get_rank() == 0:  # ok: MLS308
        tmp = path + ".tmp"
        torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step}, tmp)
        os.replace(tmp, path)
    dist.barrier()  # ok: MLS307


class PreemptionHandler:
    """On SIGTERM from the scheduler: checkpoint at the next step boundary, then exit."""

    def __init__(self, ckpt_path):
        self.ckpt_path = ckpt_path
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _on_sigterm(self, signum, frame):
        self.requested = True

    def maybe_checkpoint_and_exit(self, model, optimizer, step):
        flag = torch.tensor([int(self.requested)], device="cuda")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item():
            save_checkpoint(self.ckpt_path, model, optimizer, step)
            cleanup()
            sys.exit(0)  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
