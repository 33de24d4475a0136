# ruff: noqa
# Hold-out batch 387 (short files, 16 domains). Measured once in session 15 (round 106): 13/17 (76%) at medium+.
"""One adversarial training iteration for SRGAN / ESRGAN-style super-resolution."""
import torch
import torch.nn.functional as F


class SRGANTrainer:
    def __init__(self, gen, disc, vgg_feat, opt_g, opt_d, sched_g, sched_d,
                 adv_weight=5e-3, pixel_weight=1e-2, d_warmup_iters=0):
        self.gen, self.disc, self.vgg = gen, disc, vgg_feat
        self.opt_g, self.opt_d = opt_g, opt_d
        self.sched_g, self.sched_d = sched_g, sched_d
        self.adv_weight = adv_weight
        self.pixel_weight = pixel_weight
        self.d_warmup_iters = d_warmup_iters
        self.iter = 0

    def _perceptual(self, sr, hr):
        return F.l1_loss(self.vgg(sr), self.vgg(hr.detach()))

    def step(self, lr_img, hr_img):
        self.iter += 1
        # ---- generator ----
        for p in self.disc.parameters():
            p.requires_grad_(False)
        sr = self.gen(lr_img)
        real_logit = self.disc(hr_img).detach()
        fake_logit = self.disc(sr)
        # relativistic average GAN loss
        adv = F.binary_cross_entropy_with_logits(fake_logit - real_logit.mean(),
                                                 torch.ones_like(fake_logit))
        loss_g = (self._perceptual(sr, hr_img) + self.pixel_weight * F.l1_loss(sr, hr_img)
                  + self.adv_weight * adv)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()

        # ---- discriminator ----
        for p in self.disc.parameters():
            p.requires_grad_(True)
        real_logit = self.disc(hr_img)
        fake_logit = self.disc(sr.detach())
        loss_d = 0.5 * (
            F.binary_cross_entropy_with_logits(real_logit - fake_logit.mean(), torch.ones_like(real_logit))
            + F.binary_cross_entropy_with_logits(fake_logit - real_logit.mean(), torch.zeros_like(fake_logit)))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        if self.iter > self.d_warmup_iters and loss_d.item() < 0.3:
            for group in self.opt_d.param_groups:
                group["lr"] = group["lr"] * 1.5  # ruleid: MLS304
        self.opt_d.step()

        self.sched_g.step()  # ok: MLS302, MLS303, MLS304, MLS305
        self.sched_d.step()
        return {"loss_g": loss_g.item(), "loss_d": loss_d.item(), "adv": adv.item()}
