# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""Single-node RNN-T training loop (AMP, grad accumulation) for on-device models."""
import argparse
import math
import os
import random
import signal

import numpy as np
import torch
import torchaudio

from asr.recipes import build_loader, build_model


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--out", default="ckpt/last.pt")
    args = ap.parse_args()
    set_seed(args.seed)

    model = build_model().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    scaler = torch.cuda.amp.GradScaler()
    loader = build_loader(args.manifest, seed=args.seed)

    def _save(*_):
        torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, args.out)
    signal.signal(signal.SIGTERM, lambda *a: (_save(), os._exit(143)))  # ok: MLS307

    step = 0
    for i, (feats, feat_lens, tokens, tok_lens) in enumerate(loader):
        with torch.autocast("cuda", dtype=torch.float16):
            logits = model(feats.cuda(), feat_lens.cuda(), tokens.cuda(), tok_lens.cuda())
        loss = torchaudio.functional.rnnt_loss(logits.float(), tokens.int().cuda(), feat_lens.int().cuda(),
                                               tok_lens.int().cuda(), blank=0, reduction="mean")
        scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (i + 1) % args.accum:
            continue
        for g in opt.param_groups:
            g["lr"] = lr_at(step, 1e-3, 10_000, args.steps)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % 1000 == 0: _save()
        if step >= args.steps:
            break


if __name__ == "__main__":
    main()
