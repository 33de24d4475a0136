# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Checkpoint save/restore for DDP jobs, including save-on-preemption."""
import os
import signal
import sys

import torch
import torch.distributed as dist


class Checkpointer:
    def __init__(self, directory, model, optimizer, scheduler=None):
        self.dir = directory
        self.model, self.opt, self.sched = model, optimizer, scheduler
        self.step = 0
        os.makedirs(directory, exist_ok=True)
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _rank(self):
        return dist.get_rank() if dist.is_initialized() else 0

    def _on_sigterm(self, signum, frame):
        self.save(tag="preempt")
        sys.exit(0)  # ok: MLS307

    def save(self, tag=None):
        if self._rank() == 0:  # ok: MLS308
            state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                     "scheduler": self.sched.state_dict() if self.sched else None, "step": self.step}
            path = os.path.join(self.dir, f"ckpt_{tag or self.step}.pt")
            torch.save(state, path + ".tmp")
            os.replace(path + ".tmp", path)
        if dist.is_initialized():
            dist.barrier()

    def latest(self):
        files = [f for f in os.listdir(self.dir) if f.startswith("ckpt_") and f.endswith(".pt")]
        if not files:
            return None
        return max((os.path.join(self.dir, f) for f in files), key=os.path.getmtime)

    def restore(self, path=None):
        path = path or self.latest()
        if path is None:
            return 0
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.model.load_state_dict(state["model"])  # ok: MLS302, MLS303, MLS304, MLS305
        self.opt.load_state_dict(state["optimizer"])
        if self.sched and state.get("scheduler"):
            self.sched.load_state_dict(state["scheduler"])
        self.step = int(state.get("step", 0))
        return self.step
