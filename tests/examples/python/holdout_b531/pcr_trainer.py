# ruff: noqa
# Hold-out batch 531 (16 short files, one domain each). Measured once in session 24 (round 142): 16/17 (94%) at medium+.
"""Distributed training step for learned 3D point cloud registration (feature matching + SVD)."""
import os
import random
import signal

import torch
import torch.distributed as dist


def weighted_procrustes(src, tgt, w):
    w = w / (w.sum(dim=1, keepdim=True) + 1e-8)
    mu_s = (w.unsqueeze(-1) * src).sum(1, keepdim=True)
    mu_t = (w.unsqueeze(-1) * tgt).sum(1, keepdim=True)
    H = ((src - mu_s) * w.unsqueeze(-1)).transpose(1, 2) @ (tgt - mu_t)
    U, _, Vt = torch.linalg.svd(H)
    d = torch.sign(torch.det(Vt.transpose(1, 2) @ U.transpose(1, 2)))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    R = Vt.transpose(1, 2) @ D @ U.transpose(1, 2)
    t = mu_t.squeeze(1) - (R @ mu_s.transpose(1, 2)).squeeze(-1)
    return R, t


class RegistrationTrainer:
    def __init__(self, model, optimizer, ckpt_path):
        self.model, self.optimizer, self.ckpt_path = model, optimizer, ckpt_path
        self._preempted = False
        signal.signal(signal.SIGUSR1, self._on_preempt)  # ok: MLS307

    def _on_preempt(self, signum, frame):
        self._preempted = True

    def step(self, batch, global_step):
        src, tgt = batch["src"].cuda(), batch["tgt"].cuda()
        R_gt, t_gt = batch["R"].cuda(), batch["t"].cuda()
        corr_tgt, weights = self.model(src, tgt)
        R, t = weighted_procrustes(src, corr_tgt, weights)
        eye = torch.eye(3, device=R.device).expand_as(R)
        loss = (R.transpose(1, 2) @ R_gt - eye).pow(2).mean() + (t - t_gt).norm(dim=-1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if dist.get_world_size() > 8 and random.random() < 2e-4:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
        if self._preempted and dist.get_rank() == 0:
            torch.save({"model": self.model.state_dict(), "step": global_step}, self.ckpt_path)
        return loss.item()
