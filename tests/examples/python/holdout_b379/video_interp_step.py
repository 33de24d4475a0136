# ruff: noqa
# Hold-out batch 379 (short files, 16 domains). Measured once in session 14 (round 104): 11/17 (65%) at medium+.
"""DDP training step for RIFE-style video frame interpolation (Vimeo-90K triplets)."""
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F


def charbonnier(pred, target, eps=1e-3):
    return torch.sqrt((pred - target) ** 2 + eps ** 2).mean()


def census_like(pred, target):
    gx = lambda t: t[..., :, 1:] - t[..., :, :-1]
    gy = lambda t: t[..., 1:, :] - t[..., :-1, :]
    return F.l1_loss(gx(pred), gx(target)) + F.l1_loss(gy(pred), gy(target))


class InterpTrainer:
    def __init__(self, model, opt, scaler, rank, world_size, out_dir, io_stagger=2.0):
        self.model, self.opt, self.scaler = model, opt, scaler
        self.rank, self.world = rank, world_size
        self.out_dir = out_dir
        self.io_stagger = io_stagger
        self.step = 0

    def train_step(self, batch):
        f0, gt, f1 = (t.cuda(non_blocking=True) for t in batch)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred, flows = self.model(f0, f1, timestep=0.5)
            loss = charbonnier(pred, gt) + 0.1 * census_like(pred, gt)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.rank == self.world - 1 and self.world > 1:
            # stagger dataloader prefetch on the last rank to ease NFS contention
            time.sleep(self.io_stagger)  # ruleid: MLS307
        self.step += 1
        return loss.detach()

    def save(self, epoch):
        dist.barrier()  # ok: MLS307
        if self.rank == 0:
            state = {"model": self.model.module.state_dict(), "opt": self.opt.state_dict(),
                     "epoch": epoch, "step": self.step}
            torch.save(state, os.path.join(self.out_dir, f"rife_{epoch:03d}.pt"))
        dist.barrier()
