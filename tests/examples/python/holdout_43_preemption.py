# ruff: noqa
# Hold-out batch 43 (benchmark format, large-lab infrastructure style; by a helper that never saw mlscan's code). Measured once after round 18: 12/17 (71%) at medium+.
"""Graceful preemption: checkpoint on SIGTERM/SIGUSR1 from the scheduler, then exit cleanly."""
import os
import signal
import sys

import torch
import torch.distributed as dist


class PreemptionHandler:
    def __init__(self, save_fn):
        self.save_fn = save_fn
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_signal)  # ok: MLS307
        signal.signal(signal.SIGUSR1, self._on_signal)

    def _on_signal(self, signum, frame):
        self.requested = True

    def maybe_exit(self, step):
        """Call once per step; all ranks agree before anyone saves."""
        flag = torch.tensor([int(self.requested)], device="cuda")
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if not flag.item():
            return
        if not dist.is_initialized() or dist.get_rank() == 0:  # ok: MLS308
            self.save_fn(step)
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307
            dist.destroy_process_group()  # ok: MLS307
        print(f"[rank {os.environ.get('RANK', 0)}] preempted at step {step}, exiting", flush=True)
        sys.exit(0)  # ok: MLS307


def requeue_if_slurm():
    job = os.environ.get("SLURM_JOB_ID")
    if job and os.environ.get("RANK", "0") == "0":
        os.system(f"scontrol requeue {int(job)}")  # ok: MLS308
