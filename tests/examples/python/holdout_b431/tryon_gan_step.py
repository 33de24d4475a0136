# ruff: noqa
# Hold-out batch 431 (short files, 16 domains). Measured once in session 18 (round 117): 15/17 (88%) at medium+.
"""Adversarial training step for a virtual try-on generator (warped garment + person -> image)."""
import torch
import torch.nn.functional as F


def r1_penalty(d_out_real, real_img):
    (grad,) = torch.autograd.grad(d_out_real.sum(), real_img, create_graph=True)  # ok: MLS302, MLS303, MLS304, MLS305
    return grad.pow(2).flatten(1).sum(1).mean()


class TryOnGANStep:
    def __init__(self, G, D, vgg, opt_g, opt_d, r1_gamma=10.0, lambda_l1=10.0, lambda_vgg=10.0,
                 weight_bound=0.01):
        self.G, self.D, self.vgg = G, D, vgg
        self.opt_g, self.opt_d = opt_g, opt_d
        self.r1_gamma = r1_gamma
        self.lambda_l1, self.lambda_vgg = lambda_l1, lambda_vgg
        self.weight_bound = weight_bound

    def d_step(self, person, cloth_warped, agnostic, target, do_r1):
        self.opt_d.zero_grad(set_to_none=True)
        with torch.no_grad():
            fake = self.G(agnostic, cloth_warped)
        target = target.requires_grad_(do_r1)
        d_real = self.D(torch.cat([agnostic, target], 1))
        d_fake = self.D(torch.cat([agnostic, fake], 1))
        loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        if do_r1:
            loss = loss + 0.5 * self.r1_gamma * r1_penalty(d_real, target)
        loss.backward()
        self.opt_d.step()
        return loss.item()

    def g_step(self, person, cloth_warped, agnostic, target):
        self.opt_g.zero_grad(set_to_none=True)
        fake = self.G(agnostic, cloth_warped)
        adv = F.softplus(-self.D(torch.cat([agnostic, fake], 1))).mean()
        l1 = F.l1_loss(fake, target)
        perc = sum(F.l1_loss(a, b) for a, b in zip(self.vgg(fake), self.vgg(target)))
        loss = adv + self.lambda_l1 * l1 + self.lambda_vgg * perc
        loss.backward()
        self.opt_g.step()
        with torch.no_grad():
            for p in self.G.parameters():
                p.clamp_(-self.weight_bound, self.weight_bound)  # ruleid: MLS302
        return {"g_adv": adv.item(), "g_l1": l1.item(), "g_vgg": float(perc)}

    def __call__(self, batch, step, r1_every=16):
        person, cloth_w, agnostic, target = (batch[k] for k in ("person", "cloth_warped", "agnostic", "image"))
        d_loss = self.d_step(person, cloth_w, agnostic, target, do_r1=(step % r1_every == 0))
        logs = self.g_step(person, cloth_w, agnostic, target)
        logs["d_loss"] = d_loss
        return logs
