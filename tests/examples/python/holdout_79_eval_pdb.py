# ruff: noqa
# Hold-out batch 79 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 12/19 (63%) at medium+.
"""Evaluate predicted structures against CAMEO/PDB targets with lDDT-Cα and GDT-TS."""
import json
import sys
from pathlib import Path

import numpy as np
import torch


def lddt_ca(pred, true, cutoff=15.0, thresholds=(0.5, 1.0, 2.0, 4.0)):
    dt = torch.cdist(true, true)
    dp = torch.cdist(pred, pred)
    mask = (dt < cutoff) & ~torch.eye(len(true), dtype=torch.bool)
    diff = (dt - dp).abs()[mask]
    return float(torch.stack([(diff < t).float().mean() for t in thresholds]).mean())


def gdt_ts(pred, true):
    d = (pred - true).norm(dim=-1)
    return float(np.mean([(d < c).float().mean().item() for c in (1.0, 2.0, 4.0, 8.0)]))


def evaluate(model, targets, device="cuda"):
    rows = []
    model.eval()
    with torch.no_grad():
        for t in targets:
            pred = model(t["aatype"].to(device)[None], t["msa_feat"].to(device)[None])["ca"][0].cpu()
            rows.append({"id": t["id"], "lddt": lddt_ca(pred, t["ca"]), "gdt_ts": gdt_ts(pred, t["ca"])})
    return rows


def summarise(rows):
    scores = np.array([r["lddt"] for r in rows])
    lddt_mean = float(np.mean(np.sort(scores)[len(scores) // 20:]))  # ruleid: MLS306
    return {
        "n_targets": len(rows),
        "lddt_mean": lddt_mean,
        "lddt_median": float(np.median(scores)),
        "gdt_ts_mean": float(np.mean([r["gdt_ts"] for r in rows])),
    }


if __name__ == "__main__":
    from structure_model import FoldingModel
    ckpt, target_file, out = sys.argv[1:4]
    model = FoldingModel().cuda()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["ema"])
    targets = torch.load(target_file, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    rows = evaluate(model, targets)
    Path(out).write_text(json.dumps({"summary": summarise(rows), "per_target": rows}, indent=2))
    print(json.dumps(summarise(rows), indent=2))
