# ruff: noqa
# Hold-out batch 499 (short files, 16 domains). Measured once in session 22 (round 134): 17/17 (100%) at medium+.
"""One ESRGAN training iteration: relativistic GAN + perceptual + L1, with generator EMA."""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class ESRGANStep:
    def __init__(self, gen, disc, vgg_feat, opt_g, opt_d, ema_decay=0.999,
                 w_pix=1e-2, w_percep=1.0, w_adv=5e-3):
        self.gen, self.disc, self.vgg = gen, disc, vgg_feat
        self.opt_g, self.opt_d = opt_g, opt_d
        self.gen_ema = copy.deepcopy(gen).eval().requires_grad_(False)
        self.ema_decay = ema_decay
        self.w_pix, self.w_percep, self.w_adv = w_pix, w_percep, w_adv

    @torch.no_grad()
    def update_ema(self):
        for p_ema, p in zip(self.gen_ema.parameters(), self.gen.parameters()):
            p_ema.mul_(self.ema_decay).add_(p.detach(), alpha=1 - self.ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def __call__(self, lr_img, hr_img):
        # generator update
        self.disc.requires_grad_(False)
        sr = self.gen(lr_img)
        real_logit = self.disc(hr_img).detach()
        fake_logit = self.disc(sr)
        l_pix = F.l1_loss(sr, hr_img)
        l_percep = F.l1_loss(self.vgg(sr), self.vgg(hr_img).detach())
        l_adv = (F.binary_cross_entropy_with_logits(real_logit - fake_logit.mean(), torch.zeros_like(real_logit))
                 + F.binary_cross_entropy_with_logits(fake_logit - real_logit.mean(), torch.ones_like(fake_logit))) / 2
        loss_g = self.w_pix * l_pix + self.w_percep * l_percep + self.w_adv * l_adv
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.update_ema()

        # discriminator update
        self.disc.requires_grad_(True)
        real_logit = self.disc(hr_img)
        fake_logit = self.disc(sr.detach())
        loss_d = (F.binary_cross_entropy_with_logits(real_logit - fake_logit.mean(), torch.ones_like(real_logit))
                  + F.binary_cross_entropy_with_logits(fake_logit - real_logit.mean(), torch.zeros_like(fake_logit))) / 2
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        if loss_d.item() < 0.3:
            for group in self.opt_g.param_groups:
                group["lr"] *= 1.05  # ruleid: MLS304
        return {"l_pix": l_pix.item(), "l_percep": l_percep.item(), "l_g_adv": l_adv.item(), "l_d": loss_d.item()}
