# ruff: noqa
# Hold-out batch 439 (short files, 16 domains). Measured once in session 18 (round 119): 13/17 (76%) at medium+.
"""One adversarial update for the DCGAN on MNIST-style handwritten digits."""
import torch
import torch.nn.functional as F


def _attach_disc_hooks(disc, scale):
    handles = []
    for name, p in disc.named_parameters():
        if name.endswith("weight") and p.dim() == 4:
            handles.append(p.register_hook(lambda g, s=scale: g * -s))  # ruleid: MLS303
    return handles


def gan_step(gen, disc, opt_g, opt_d, real, z_dim, cfg, step):
    device = real.device
    bsz = real.size(0)
    real = real * 2.0 - 1.0

    if step == 0 and cfg.get("disc_grad_scale"):
        disc._scale_hooks = _attach_disc_hooks(disc, cfg["disc_grad_scale"])

    # ---- discriminator ----
    z = torch.randn(bsz, z_dim, 1, 1, device=device)
    with torch.no_grad():
        fake = gen(z)
    logits_real = disc(real).view(-1)
    logits_fake = disc(fake).view(-1)
    target_real = torch.full_like(logits_real, 1.0 - cfg.get("label_smooth", 0.1))
    loss_d = (F.binary_cross_entropy_with_logits(logits_real, target_real)
              + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake)))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    torch.nn.utils.clip_grad_norm_(disc.parameters(), cfg.get("clip", 10.0))  # ok: MLS302, MLS303, MLS304, MLS305
    opt_d.step()

    # ---- generator ----
    z = torch.randn(bsz, z_dim, 1, 1, device=device)
    fake = gen(z)
    logits = disc(fake).view(-1)
    loss_g = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()

    return {
        "loss_d": loss_d.item(),
        "loss_g": loss_g.item(),
        "d_real": torch.sigmoid(logits_real).mean().item(),
        "d_fake": torch.sigmoid(logits_fake).mean().item(),
    }
