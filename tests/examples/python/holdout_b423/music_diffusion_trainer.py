# ruff: noqa
# Hold-out batch 423 (short files, 16 domains). Measured once in session 17 (round 115): 14/17 (82%) at medium+.
"""Training wrapper for a mel-spectrogram diffusion model (v-prediction, cosine schedule)."""
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def cosine_alpha_bar(t, s=0.008):
    return torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2


class MelDiffusionTrainer(nn.Module):
    def __init__(self, unet, ema_decay=0.9995, cond_drop=0.1):
        super().__init__()
        self.unet = unet
        self.ema = copy.deepcopy(unet).eval().requires_grad_(False)
        self.ema_decay = ema_decay
        self.cond_drop = cond_drop
        self._install_output_hooks()

    def _install_output_hooks(self):
        # keep fp16 grads from the wide output projection in range
        def _stabilize(module, grad_input, grad_output):
            return tuple(g.neg() if g is not None else None for g in grad_input)  # ruleid: MLS303
        self.unet.out_proj.register_full_backward_hook(_stabilize)  # ruleid: MLS303

    def forward(self, mel, text_emb):
        b = mel.shape[0]
        t = torch.rand(b, device=mel.device)
        a_bar = cosine_alpha_bar(t).view(b, 1, 1, 1)
        noise = torch.randn_like(mel)
        x_t = a_bar.sqrt() * mel + (1 - a_bar).sqrt() * noise
        v_target = a_bar.sqrt() * noise - (1 - a_bar).sqrt() * mel
        keep = (torch.rand(b, device=mel.device) > self.cond_drop).float().view(b, 1, 1)
        v_pred = self.unet(x_t, t, text_emb * keep)
        return F.mse_loss(v_pred, v_target)

    @torch.no_grad()
    def update_ema(self):
        for p_ema, p in zip(self.ema.parameters(), self.unet.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - self.ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for b_ema, b in zip(self.ema.buffers(), self.unet.buffers()):
            b_ema.copy_(b)

    def training_step(self, batch, optimizer, scaler):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = self(batch["mel"], batch["text_emb"])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        self.update_ema()
        return loss.detach()
