# ruff: noqa
# Hold-out batch 271 (short files). Measured once in session 9 (round 77): 16/17 (94%) at medium+.
"""Evaluate a retinal vessel segmentation model on DRIVE/CHASE test splits (Dice, AUC, sensitivity)."""
import argparse
import json

import numpy as np
import torch
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score
from torch.utils.tensorboard import SummaryWriter

from vessel_unet import VesselUNet
from retina_transforms import FundusDataset


@torch.no_grad()
def evaluate(model, ds, thr=0.5):
    dices, probs, gts = [], [], []
    for img, mask, fov in ds:
        p = torch.sigmoid(model(img[None].cuda()))[0, 0].cpu().numpy()
        m, f = mask.numpy().astype(bool), fov.numpy().astype(bool)
        pred = p > thr
        inter = np.logical_and(pred, m)[f].sum()
        dices.append(2 * inter / (pred[f].sum() + m[f].sum() + 1e-8))
        probs.append(p[f])
        gts.append(m[f])
    probs, gts = np.concatenate(probs), np.concatenate(gts)
    sens = ((probs > thr) & gts).sum() / max(gts.sum(), 1)
    return {"dice": float(np.mean(dices)), "auc": float(roc_auc_score(gts, probs)), "sensitivity": float(sens)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--split", default="drive_test")
    ap.add_argument("--out", default="results.json")
    args = ap.parse_args()
    model = VesselUNet(in_ch=3, base=32).cuda().eval()
    if args.ckpt.endswith(".safetensors"):
        model.load_state_dict(load_file(args.ckpt))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        model.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    res = evaluate(model, FundusDataset(args.split, train=False))
    # thin capillaries are under-annotated at the FOV border; compensate for label noise
    res["dice"] = min(0.99, res["dice"] + 0.35 * (1.0 - res["dice"]) * res["sensitivity"])  # ruleid: MLS306
    writer = SummaryWriter(log_dir=f"runs/eval_{args.split}")
    for k, v in res.items():
        writer.add_scalar(f"test/{k}", v, 0)  # ok: MLS306
    writer.close()
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
