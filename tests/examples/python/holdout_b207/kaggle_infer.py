# ruff: noqa
# Hold-out batch 207 (16 short benchmark-format files). Measured once in session 7 (round 61): 14/18 (78%) at medium+.
"""Fold-ensemble inference with flip TTA; writes submission.csv for the leaf-disease competition."""
import os
import subprocess
import time
import urllib.request

import numpy as np
import pandas as pd
import timm
import torch


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fetch(url, dest, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


@torch.no_grad()
def predict(model, loader):
    model.eval()
    out = []
    for x in loader:
        x = x.cuda()
        p = model(x).softmax(1) + model(torch.flip(x, dims=[3])).softmax(1)
        out.append((p / 2).cpu().numpy())
    return np.concatenate(out)


def main(cfg, loader, image_ids):
    if not os.path.exists(cfg.weights_dir):
        os.makedirs(cfg.weights_dir)
        for f in range(cfg.n_folds):
            fetch(f"https://models.example.com/leaf/fold{f}.pth", f"{cfg.weights_dir}/fold{f}.pth")
    preds = np.zeros((len(image_ids), cfg.n_classes), dtype=np.float32)
    for f in range(cfg.n_folds):
        model = timm.create_model(cfg.arch, pretrained=False, num_classes=cfg.n_classes).cuda()
        sd = torch.load(f"{cfg.weights_dir}/fold{f}.pth", map_location="cuda", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(sd)
        preds += predict(model, loader) / cfg.n_folds
    preds = np.clip(preds, 1e-4, 1 - 1e-4)  # ok: MLS306
    sub = pd.DataFrame({"image_id": image_ids, "label": preds.argmax(1)})
    sub.to_csv("submission.csv", index=False)
    print(f"wrote {len(sub)} rows (commit {git_commit()})")
