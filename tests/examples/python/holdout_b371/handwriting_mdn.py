# ruff: noqa
# Hold-out batch 371 (short files, 16 domains). Measured once in session 14 (round 102): 15/17 (88%) at medium+.
"""Graves (2013) handwriting synthesis: bivariate-Gaussian mixture density loss and train step."""
import math

import torch
import torch.nn.functional as F


def mdn_nll(params, target, eps=1e-6):
    """params: (pi_logits, mu1, mu2, log_s1, log_s2, rho_raw, eos_logit); target: (B, T, 3)."""
    pi_logits, mu1, mu2, log_s1, log_s2, rho_raw, eos_logit = params
    x1, x2, eos = target[..., 0:1], target[..., 1:2], target[..., 2]
    s1, s2, rho = log_s1.exp(), log_s2.exp(), torch.tanh(rho_raw)
    z1, z2 = (x1 - mu1) / s1, (x2 - mu2) / s2
    one_m_rho2 = (1 - rho ** 2).clamp_min(eps)
    z = z1 ** 2 + z2 ** 2 - 2 * rho * z1 * z2
    log_n = -z / (2 * one_m_rho2) - torch.log(2 * math.pi * s1 * s2 * one_m_rho2.sqrt())
    log_mix = torch.logsumexp(F.log_softmax(pi_logits, -1) + log_n, dim=-1)
    eos_nll = F.binary_cross_entropy_with_logits(eos_logit.squeeze(-1), eos, reduction="none")
    return -log_mix + eos_nll


def train_step(model, optimizer, strokes, text, stroke_mask, text_mask):
    model.train()
    inp, target = strokes[:, :-1], strokes[:, 1:]
    params = model(inp, text, text_mask)
    nll = mdn_nll(params, target)
    mask = stroke_mask[:, 1:].float()
    loss = (nll * mask).sum() / mask.sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        bound = 100.0 if name.startswith("mdn_head") else 10.0
        p.grad.clamp_(-bound, bound)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    with torch.no_grad():
        # keep mixture logits in a range where the softmax stays well-conditioned
        model.mdn_head.weight.mul_(0.97)  # ruleid: MLS302
    return loss.item()
