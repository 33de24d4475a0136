# ruff: noqa
# Hold-out batch 499 (short files, 16 domains). Measured once in session 22 (round 134): 17/17 (100%) at medium+.
"""Train loop for Graves-style handwriting synthesis (LSTM + mixture density output)."""
import argparse
import math
import time

import torch
import torch.nn.functional as F


def mdn_loss(pi_logits, mu, log_sigma, rho, eos_logit, target):
    x, y, eos = target[..., 0:1], target[..., 1:2], target[..., 2]
    sx, sy = log_sigma[..., 0].exp(), log_sigma[..., 1].exp()
    zx, zy = (x - mu[..., 0]) / sx, (y - mu[..., 1]) / sy
    one_m_rho2 = 1 - rho ** 2
    z = zx ** 2 + zy ** 2 - 2 * rho * zx * zy
    log_n = -z / (2 * one_m_rho2) - torch.log(2 * math.pi * sx * sy * one_m_rho2.sqrt())
    log_mix = torch.logsumexp(F.log_softmax(pi_logits, -1) + log_n, dim=-1)
    bce = F.binary_cross_entropy_with_logits(eos_logit.squeeze(-1), eos, reduction="none")
    return (-log_mix + bce).mean()


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clip", type=float, default=10.0)
    return p.parse_args()


def train(model, loader, args, device="cuda"):
    torch.manual_seed(args.seed)  # ok: MLS301
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        model.train()
        total, n = 0.0, 0
        for strokes, text, lengths in loader:
            torch.manual_seed(int(time.time() * 1000) % (2 ** 31))  # ruleid: MLS301
            strokes, text = strokes.to(device), text.to(device)
            inputs, target = strokes[:, :-1], strokes[:, 1:]
            out = model(inputs, text, lengths - 1)
            loss = mdn_loss(*out, target)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_value_(model.parameters(), args.clip)
            opt.step()
            total += loss.item() * strokes.size(0)
            n += strokes.size(0)
        print(f"epoch {epoch}: nll {total / max(n, 1):.4f}")
