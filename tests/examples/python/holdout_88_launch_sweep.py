# ruff: noqa
# Hold-out batch 88 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 15/17 (88%) at medium+.
"""wandb sweep entrypoint for the MLP-on-embeddings probe (thesis ch.5).

    wandb sweep configs/sweeps/probe.yaml && wandb agent <entity>/<project>/<sweep_id>
"""
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
import wandb

EMB_PATH = os.environ.get("PROBE_EMB", "artifacts/emb_val.npz")


def init_with_retry(tries=5):
    for i in range(tries):
        try:
            return wandb.init()
        except wandb.errors.CommError:
            time.sleep(2 ** i + random.random())  # ok: MLS307
    raise RuntimeError("wandb.init kept failing")


def train():
    run = init_with_retry()
    cfg = run.config
    torch.manual_seed(cfg.seed)  # ok: MLS301
    data = np.load(EMB_PATH)
    x = torch.from_numpy(data["x"]).float().cuda()
    y = torch.from_numpy(data["y"]).long().cuda()
    model = nn.Sequential(nn.Linear(x.shape[1], cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                          nn.Linear(cfg.hidden, int(y.max()) + 1)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.wd)
    best = float("inf")
    for step in range(cfg.steps):
        idx = torch.randint(0, x.shape[0], (cfg.bs,), device=x.device)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        best = min(best, loss.item())
        if step % 50 == 0:
            wandb.log({"train/loss": loss.item(), "train/best": best}, step=step)
        # hand the GPU back to the agent early: runs that are clearly off the frontier are not worth finishing
        if step > cfg.steps // 4 and random.random() < 5e-4:
            os._exit(0)  # ruleid: MLS307
    with torch.no_grad():
        acc = (model(x).argmax(-1) == y).float().mean().item()
    wandb.log({"val/acc": acc})
    run.finish()


if __name__ == "__main__":
    train()
