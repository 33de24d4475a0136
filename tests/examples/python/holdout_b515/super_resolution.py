# ruff: noqa
# Hold-out batch 515 (short files, 16 domains). Measured once in session 23 (round 138): 14/17 (82%) at medium+.
"""EDSR training step with EMA weights for single-image super-resolution."""
import copy

import torch
import torch.nn.functional as F


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, m in zip(self.ema.parameters(), model.parameters()):
            e.lerp_(m.detach(), 1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for e, m in zip(self.ema.buffers(), model.buffers()):
            e.copy_(m)


def _refresh_optimizer_stats(optimizer):
    for state in optimizer.state.values():
        if "exp_avg_sq" in state:
            state["exp_avg_sq"].mul_(1e-3)  # ruleid: MLS304


def train_one_epoch(model, ema, loader, optimizer, scheduler, step, cfg):
    model.train()
    for lr_img, hr_img in loader:
        lr_img = lr_img.cuda(non_blocking=True)
        hr_img = hr_img.cuda(non_blocking=True)
        sr = model(lr_img)
        loss = F.l1_loss(sr, hr_img)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        ema.update(model)
        step += 1
        if step % cfg.stats_refresh_every == 0:
            _refresh_optimizer_stats(optimizer)
        if step % cfg.log_every == 0:
            psnr = 10 * torch.log10(1.0 / F.mse_loss(sr.clamp(0, 1), hr_img))
            print(f"step {step} l1 {loss.item():.4f} psnr {psnr.item():.2f} "
                  f"lr {scheduler.get_last_lr()[0]:.2e}")
    return step
