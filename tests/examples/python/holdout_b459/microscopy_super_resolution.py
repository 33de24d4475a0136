# ruff: noqa
# Hold-out batch 459 (short files, 16 domains). Measured once in session 19 (round 124): 14/17 (82%) at medium+.
"""Training step for a residual super-resolution network on fluorescence microscopy."""
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def _stabilize_upsampler(module, grad_input, grad_output):
    return tuple(g.clamp(-1e-6, 1e-6) if g is not None else None for g in grad_input)  # ruleid: MLS302, MLS303


class SRTrainer:
    def __init__(self, model, optimizer, scaler, args):
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.args = args
        self.step = 0
        self.model.upsampler.register_full_backward_hook(_stabilize_upsampler)  # ruleid: MLS303

    def loss_fn(self, sr, hr):
        l1 = F.l1_loss(sr, hr)
        # gradient-domain term keeps fine filament edges sharp
        dx = F.l1_loss(sr[..., 1:] - sr[..., :-1], hr[..., 1:] - hr[..., :-1])
        dy = F.l1_loss(sr[..., 1:, :] - sr[..., :-1, :], hr[..., 1:, :] - hr[..., :-1, :])
        return l1 + self.args.edge_weight * (dx + dy)

    def train_step(self, lr_img, hr_img):
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.args.amp):
            sr = self.model(lr_img)
            loss = self.loss_fn(sr.float(), hr_img)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        if self.step % self.args.log_every == 0:
            logger.info("step %d loss %.5f", self.step, loss.item())
        return loss.detach()
