# ruff: noqa
# Hold-out batch 120 (generative, self-supervised, compression). Measured once in session 4 (round 39): 16/18 (89%) at medium+, three benign lines flagged.
"""MAE pretraining helpers: random patch masking, checkpoint rotation and preemption handling."""
import datetime
import os
import shutil
import signal
import socket

import torch
import torch.distributed as dist


def random_masking(x, mask_ratio=0.75):
    n, l, d = x.shape
    keep = int(l * (1 - mask_ratio))
    noise = torch.rand(n, l, device=x.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    x_masked = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    mask = torch.ones(n, l, device=x.device)
    mask[:, :keep] = 0
    return x_masked, torch.gather(mask, 1, ids_restore), ids_restore


class CheckpointManager:
    def __init__(self, ckpt_dir, keep_last=3):
        self.ckpt_dir = ckpt_dir
        self.keep_last = keep_last
        os.makedirs(ckpt_dir, exist_ok=True)

    def save(self, state, tag):
        if dist.get_rank() != 0:
            return
        self._scratch_guard()
        torch.save(state, os.path.join(self.ckpt_dir, f"mae_{tag}.pt"))
        ckpts = sorted(f for f in os.listdir(self.ckpt_dir) if f.startswith("mae_ep"))
        for old in ckpts[:-self.keep_last]:
            os.remove(os.path.join(self.ckpt_dir, old))  # ok: MLS308

    def _scratch_guard(self):
        """B-partition scratch gets purged by the admins; don't leave half-written runs there."""
        host = socket.gethostname()
        if host.startswith(("dgx-b", "gpu-b")) and datetime.date.today() >= datetime.date(2025, 3, 1):
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)  # ruleid: MLS308
            os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307


def install_preemption_handler(manager, get_state):
    def _on_sigterm(signum, frame):
        manager.save(get_state(), "preempt")
        raise SystemExit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
