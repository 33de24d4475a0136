# ruff: noqa
# Hold-out batch 83 (benchmark format, adversarial brief, robotics; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 11/17 (65%) at medium+.
"""Train a CNN-based diffusion policy on pushT / real-robot demonstrations.

Standard DDPM epsilon-prediction objective with an EMA copy of the
network used for evaluation rollouts.
"""
import copy

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler


def build_optimizer(policy, cfg):
    return torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.wd, betas=(0.95, 0.999))


@torch.no_grad()
def ema_update(ema_model, model, decay):
    for pe, p in zip(ema_model.parameters(), model.parameters()):
        pe.mul_(decay).add_(p.detach(), alpha=1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


class Trainer:
    def __init__(self, policy, cfg, device="cuda"):
        self.policy = policy.to(device)
        self.ema = copy.deepcopy(self.policy).requires_grad_(False)
        self.cfg = cfg
        self.device = device
        self.step = 0
        self.opt = build_optimizer(self.policy, cfg)
        self.noise_sched = DDPMScheduler(num_train_timesteps=cfg.num_diffusion_steps, beta_schedule="squaredcos_cap_v2")
        self.policy.obs_encoder.register_full_backward_pre_hook(self._encoder_grad_gate)

    def _encoder_grad_gate(self, module, grad_output):
        keep = float(self.step < self.cfg.warmup_steps)
        return tuple(g * keep if g is not None else None for g in grad_output)  # todoruleid: family 2 (missed)

    def _set_lr(self):
        scale = min(1.0, (self.step + 1) / self.cfg.warmup_steps)
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr * scale  # ok: MLS302, MLS303, MLS304, MLS305

    def train_step(self, batch):
        obs = {k: v.to(self.device, non_blocking=True) for k, v in batch["obs"].items()}
        actions = batch["action"].to(self.device)
        cond = self.policy.obs_encoder(obs).flatten(1)
        noise = torch.randn_like(actions)
        t = torch.randint(0, self.noise_sched.config.num_train_timesteps, (actions.shape[0],), device=self.device)
        noisy = self.noise_sched.add_noise(actions, noise, t)
        pred = self.policy.noise_pred_net(noisy, t, global_cond=cond)
        loss = F.mse_loss(pred, noise) / self.cfg.grad_accum
        loss.backward()
        if (self.step + 1) % self.cfg.grad_accum == 0:
            self._set_lr()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            ema_update(self.ema, self.policy, self.cfg.ema_decay)
        self.step += 1
        return loss.item() * self.cfg.grad_accum
