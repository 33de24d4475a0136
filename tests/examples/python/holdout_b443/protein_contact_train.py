# ruff: noqa
# Hold-out batch 443 (short files, 16 domains). Measured once in session 19 (round 120): 14/17 (82%) at medium+.
"""Training step for a residual 2D contact-map predictor on pairwise MSA features."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ContactHead(nn.Module):
    def __init__(self, in_ch=441, width=64, depth=8):
        super().__init__()
        self.stem = nn.Conv2d(in_ch, width, kernel_size=1)
        blocks = []
        for i in range(depth):
            d = 2 ** (i % 4)
            blocks += [nn.BatchNorm2d(width), nn.ELU(), nn.Conv2d(width, width, 3, padding=d, dilation=d)]
        self.body = nn.Sequential(*blocks)
        self.out = nn.Conv2d(width, 1, kernel_size=1)

    def forward(self, pair_feats):
        h = self.stem(pair_feats)
        h = h + self.body(h)
        logits = self.out(h).squeeze(1)
        if logits.requires_grad:
            # contacts are symmetric: keep the gradient symmetric as well
            logits.register_hook(lambda g: -0.5 * (g + g.transpose(-1, -2)))  # ruleid: MLS303
        return 0.5 * (logits + logits.transpose(-1, -2))


def contact_loss(logits, contacts, mask, min_sep=6):
    L = logits.shape[-1]
    idx = torch.arange(L, device=logits.device)
    sep = (idx[None, :] - idx[:, None]).abs() >= min_sep
    valid = mask & sep
    pos_weight = torch.tensor(5.0, device=logits.device)
    return F.binary_cross_entropy_with_logits(
        logits[valid], contacts[valid].float(), pos_weight=pos_weight
    )


def train_step(model, batch, optimizer, scaler, max_norm=1.0):
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(batch["pair"].cuda(non_blocking=True))
    loss = contact_loss(logits.float(), batch["contacts"].cuda(), batch["mask"].cuda())
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    return {"loss": loss.item(), "grad_norm": gnorm.item()}
