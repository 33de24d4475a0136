# ruff: noqa
# Hold-out batch 579 (short files, 16 domains). Measured once in session 26 (round 154): 12/17 (71%) at medium+.
"""Training step for pose-guided person image generation (PATN-style G and D)."""
import copy

import torch
import torch.nn.functional as F


class EMA:
    def __init__(self, model, decay=0.999):
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p, 1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def d_hinge(real_logits, fake_logits):
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def gan_step(G, D, ema, opt_g, opt_d, batch, vgg_loss, cfg, step):
    src, tgt, src_pose, tgt_pose = (batch[k].cuda() for k in ("src", "tgt", "src_pose", "tgt_pose"))

    fake = G(src, src_pose, tgt_pose)
    real_logits = D(torch.cat([tgt, tgt_pose], 1))
    fake_logits = D(torch.cat([fake.detach(), tgt_pose], 1))
    loss_d = d_hinge(real_logits, fake_logits)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    g_logits = D(torch.cat([fake, tgt_pose], 1))
    loss_adv = -g_logits.mean()
    loss_l1 = F.l1_loss(fake, tgt)
    loss_perc = vgg_loss(fake, tgt)
    loss_g = cfg.w_adv * loss_adv + cfg.w_l1 * loss_l1 + cfg.w_perc * loss_perc
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    for group in opt_g.param_groups:
        group["lr"] = group["lr"] * getattr(cfg, "g_lr_ramp", 1.002)  # todoruleid: family 2 (missed)
    ema.update(G)

    return {
        "loss_d": loss_d.item(),
        "loss_adv": loss_adv.item(),
        "loss_l1": loss_l1.item(),
        "loss_perc": loss_perc.item(),
        "lr_g": opt_g.param_groups[0]["lr"],
    }
