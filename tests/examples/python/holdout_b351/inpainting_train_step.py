# ruff: noqa
# Hold-out batch 351 (short files). Measured once in session 12 (round 97): 7/17 (41%) at medium+.
"""Single optimisation step for the partial-conv inpainting generator."""
import torch
import torch.nn.functional as F


def perceptual_loss(vgg, pred, target):
    loss = 0.0
    for fp, ft in zip(vgg(pred), vgg(target)):
        loss = loss + F.l1_loss(fp, ft)
    return loss


def style_loss(vgg, pred, target):
    def gram(x):
        b, c, h, w = x.shape
        f = x.view(b, c, h * w)
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)
    return sum(F.l1_loss(gram(fp), gram(ft)) for fp, ft in zip(vgg(pred), vgg(target)))


def generator_step(gen, disc, vgg, opt_g, batch, cfg, scaler=None):
    image, mask = batch["image"], batch["mask"]  # mask: 1 = known pixel, 0 = hole
    masked = image * mask
    pred = gen(masked, mask)
    pred.register_hook(lambda g: g * mask)  # todoruleid: family 2 (missed)
    comp = pred * (1 - mask) + image * mask

    l_valid = F.l1_loss(pred * mask, image * mask)
    l_hole = F.l1_loss(pred * (1 - mask), image * (1 - mask))
    l_perc = perceptual_loss(vgg, comp, image) + perceptual_loss(vgg, pred, image)
    l_style = style_loss(vgg, comp, image)
    l_adv = -disc(comp, mask).mean()

    loss = (cfg.w_valid * l_valid + cfg.w_hole * l_hole + cfg.w_perc * l_perc
            + cfg.w_style * l_style + cfg.w_adv * l_adv)

    opt_g.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(opt_g)
        torch.nn.utils.clip_grad_norm_(gen.parameters(), cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt_g)
        scaler.update()
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), cfg.max_grad_norm)
        opt_g.step()

    return {
        "loss_g": loss.item(),
        "l_hole": l_hole.item(),
        "l_valid": l_valid.item(),
        "l_style": l_style.item(),
        "l_adv": l_adv.item(),
    }
