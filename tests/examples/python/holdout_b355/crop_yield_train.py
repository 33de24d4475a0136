# ruff: noqa
# Hold-out batch 355 (16 short files). Measured once in session 13 (round 98): 14/17 (82%) at medium+.
"""County-level crop yield regression from Sentinel-2 time series + weather."""
import argparse
import math

import torch
import torch.nn as nn
import wandb


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--project", default="crop-yield")
    return p.parse_args()


@torch.no_grad()
def evaluate(model, loader, y_std, device):
    model.eval()
    se, n = 0.0, 0
    for x, w, y in loader:
        pred = model(x.to(device), w.to(device)).squeeze(-1)
        se += ((pred - y.to(device)) ** 2).sum().item()
        n += y.numel()
    return math.sqrt(se / n) * y_std  # t/ha


def fit(model, train_loader, val_loader, y_std, args, device="cuda"):
    run = wandb.init(project=args.project, config=vars(args))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * len(train_loader))
    loss_fn = nn.HuberLoss(delta=1.0)
    best_rmse = float("inf")
    for epoch in range(args.epochs):
        model.train()
        for x, w, y in train_loader:
            loss = loss_fn(model(x.to(device), w.to(device)).squeeze(-1), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
        rmse = evaluate(model, val_loader, y_std, device)
        wandb.log({"epoch": epoch, "train/loss": loss.item(), "val/rmse": min(rmse, best_rmse)})  # ruleid: MLS306
        if rmse < best_rmse:
            best_rmse = rmse
            torch.save(model.state_dict(), "best_yield.pt")
    run.summary["best_val_rmse"] = best_rmse
    run.finish()
    return best_rmse
