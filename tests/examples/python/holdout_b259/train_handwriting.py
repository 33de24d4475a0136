# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""Handwriting generation: LSTM with a bivariate Gaussian mixture output over pen offsets."""
import argparse
import math
import os
import random
import signal
import sys
import numpy as np
import torch
from handwriting_model import HandwritingMDN, mdn_nll
from iam_strokes import stroke_loader


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def lr_at(step, base, warmup, total):
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/iam_ondb")
    ap.add_argument("--ckpt-dir", default="checkpoints/handwriting")
    ap.add_argument("--resume", default=None)
    ap.add_argument("--steps", type=int, default=60000)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    set_seed(args.seed)
    model = HandwritingMDN(n_mix=20, hidden=400).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = 0
    if args.resume:
        state = torch.load(args.resume, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]

    def save_and_exit(signum, frame):
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step},
                   os.path.join(args.ckpt_dir, f"step_{step}.pt"))
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, save_and_exit)
    os.makedirs(args.ckpt_dir, exist_ok=True)
    for i, (strokes, text, mask) in enumerate(stroke_loader(args.data, batch_size=32, infinite=True)):
        params = model(strokes.cuda(), text.cuda())
        loss = mdn_nll(params, strokes.cuda(), mask.cuda()) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
        loss.backward()
        if (i + 1) % args.accum:
            continue
        for g in opt.param_groups:
            g["lr"] = lr_at(step, 1e-3, 1000, args.steps)  # ok: MLS302, MLS303, MLS304, MLS305
        torch.nn.utils.clip_grad_value_(model.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step >= args.steps:
            break


if __name__ == "__main__":
    main()
