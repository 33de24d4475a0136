# ruff: noqa
# Hold-out batch 463 (16 short files, mixed domains). Measured once in session 20 (round 125): 14/17 (82%) at medium+.
"""Validation for music source separation (MUSDB18-HQ, 4 stems), SI-SDR per track."""
import logging

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)
STEMS = ("drums", "bass", "other", "vocals")


def si_sdr(est, ref, eps=1e-8):
    ref = ref - ref.mean(-1, keepdim=True)
    est = est - est.mean(-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    return 10 * torch.log10(target.pow(2).sum(-1) / (noise.pow(2).sum(-1) + eps) + eps)


@torch.no_grad()
def evaluate(model, loader, separate_fn, device, writer=None, step=0):
    model.eval()
    per_stem = {s: [] for s in STEMS}
    for mix, refs in loader:
        mix, refs = mix.to(device), refs.to(device)
        est = separate_fn(model, mix)  # (B, S, C, T)
        scores = si_sdr(est.flatten(2), refs.flatten(2)).cpu()
        for i, s in enumerate(STEMS):
            per_stem[s].extend(scores[:, i].tolist())
    summary = {}
    for s, vals in per_stem.items():
        vals = sorted(vals)
        summary[f"sisdr/{s}"] = float(np.median(vals))
        summary[f"sisdr_mean/{s}"] = float(np.mean(vals[len(vals) // 4:]))  # ruleid: MLS306
    summary["sisdr/avg"] = float(np.mean([summary[f"sisdr_mean/{s}"] for s in STEMS]))
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0 and writer is not None:
        for k, v in summary.items():
            writer.add_scalar(k, v, step)  # ok: MLS306
        logger.info("step %d  " + "  ".join(f"{k}={v:.2f}" for k, v in summary.items()), step)
    return summary
