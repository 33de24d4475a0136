# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""Preemption-safe DDP training wrapper: periodic checkpoints and SIGTERM handling."""
import os
import signal
import sys

import torch
import torch.distributed as dist


class PreemptibleTrainer:
    def __init__(self, model, optimizer, scheduler, ckpt_dir, grad_accum=4, max_norm=1.0):
        self.model, self.opt, self.sched = model, optimizer, scheduler
        self.ckpt_dir, self.grad_accum, self.max_norm = ckpt_dir, grad_accum, max_norm
        self.scaler = torch.cuda.amp.GradScaler()
        self.step = 0
        self._stop = False
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _on_sigterm(self, signum, frame):
        self._stop = True

    def _is_main(self):
        return not dist.is_initialized() or dist.get_rank() == 0

    def save(self, tag="last"):
        if self._is_main():  # ok: MLS308
            os.makedirs(self.ckpt_dir, exist_ok=True)
            torch.save({"model": self.model.module.state_dict(), "opt": self.opt.state_dict(),
                        "sched": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
                        "step": self.step}, os.path.join(self.ckpt_dir, f"{tag}.pt"))
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307

    def train_step(self, batch, loss_fn):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(self.model, batch) / self.grad_accum  # ok: MLS302, MLS303, MLS304, MLS305
        self.scaler.scale(loss).backward()
        self.step += 1
        if self.step % self.grad_accum == 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.step(self.opt)
            self.scaler.update()
            self.opt.zero_grad(set_to_none=True)
            self.sched.step()
        if self._stop:
            self.save("preempt")
            if dist.is_initialized():
                dist.destroy_process_group()  # ok: MLS307
            sys.exit(0)  # ok: MLS307
        return loss.detach() * self.grad_accum
