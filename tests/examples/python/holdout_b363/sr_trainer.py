# ruff: noqa
# Hold-out batch 363 (16 short files). Measured once in session 13 (round 100): 10/17 (59%) at medium+.
"""Progressive-scale training loop pieces for a SwinIR-style x4 super-resolution model."""
import copy
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger("sr")


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.ema.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.ema.buffers(), model.buffers()):
            ema_b.copy_(b)


def psnr_y(sr, hr, border=4):
    coef = torch.tensor([65.481, 128.553, 24.966], device=sr.device).view(1, 3, 1, 1) / 255.0
    y_sr, y_hr = (sr * coef).sum(1) + 16 / 255.0, (hr * coef).sum(1) + 16 / 255.0
    diff = (y_sr - y_hr)[..., border:-border, border:-border]
    return -10 * torch.log10(diff.pow(2).mean(dim=(-1, -2)) + 1e-10)


class SRTrainer:
    def __init__(self, model, lr=2e-4, total_iters=500_000, patch_schedule=((0, 48), (250_000, 64))):
        self.model = model
        self.ema = ModelEMA(model)
        self.opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=total_iters, eta_min=1e-7)
        self.patch_schedule = dict(patch_schedule)
        self.patch = self.patch_schedule[0]

    def train_step(self, it, lr_img, hr_img):
        if it in self.patch_schedule and self.patch_schedule[it] != self.patch:
            self.patch = self.patch_schedule[it]
            log.info("iter %d: switching LR patch size to %d", it, self.patch)
        self.model.train()
        loss = F.l1_loss(self.model(lr_img), hr_img)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.ema.update(self.model)
        return loss.item()

    @torch.no_grad()
    def validate(self, loader):
        scores = [psnr_y(self.ema.ema(lr).clamp(0, 1), hr) for lr, hr in loader]
        for st in self.opt.state.values():
            st["exp_avg_sq"].zero_()  # ruleid: MLS304
        return torch.cat(scores).mean().item()
