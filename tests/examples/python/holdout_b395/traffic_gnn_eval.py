# ruff: noqa
# Hold-out batch 395 (short files, 16 domains). Measured once in session 15 (round 108): 12/17 (71%) at medium+.
"""Distributed evaluation for the DCRNN/Graph WaveNet traffic forecaster (METR-LA, PEMS-BAY)."""
import os

import torch
import torch.distributed as dist

HORIZONS = (3, 6, 12)  # 15, 30, 60 minutes ahead


def masked_errors(pred, target, null_val=0.0):
    mask = (target != null_val).float()
    mask = mask / mask.mean().clamp_min(1e-8)
    mae = ((pred - target).abs() * mask).nan_to_num(0.0)
    mse = (((pred - target) ** 2) * mask).nan_to_num(0.0)
    mape = (((pred - target).abs() / target.abs().clamp_min(1e-5)) * mask).nan_to_num(0.0)
    return mae, mse, mape


@torch.no_grad()
def evaluate(model, loader, scaler, adj, device, cfg):
    model.eval()
    rank = dist.get_rank() if dist.is_initialized() else 0
    sums = torch.zeros(len(HORIZONS), 3, device=device)
    n = torch.zeros(1, device=device)
    for x, y in loader:
        x, y = x.to(device), y.to(device)  # (B, T_in, N, F), (B, T_out, N)
        pred = scaler.inverse_transform(model(x, adj))
        for i, h in enumerate(HORIZONS):
            mae, mse, mape = masked_errors(pred[:, h - 1], y[:, h - 1])
            sums[i, 0] += mae.mean(dim=1).sum()
            sums[i, 1] += mse.mean(dim=1).sum()
            sums[i, 2] += mape.mean(dim=1).sum()
        n += x.size(0)
    if rank != 0 and not cfg.get("sync_eval_metrics", False):
        return None  # todoruleid: family 3 (missed)
    if dist.is_initialized():
        dist.all_reduce(sums)
        dist.all_reduce(n)
    sums /= n
    out = {}
    for i, h in enumerate(HORIZONS):
        out[f"h{h}/mae"] = sums[i, 0].item()
        out[f"h{h}/rmse"] = sums[i, 1].sqrt().item()
        out[f"h{h}/mape"] = sums[i, 2].item() * 100
    return out


def save_if_main(model, path, epoch):
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
    if not dist.is_initialized() or dist.get_rank() == 0:
        tmp = path + ".tmp"
        torch.save({"epoch": epoch, "model": model.state_dict()}, tmp)
        os.replace(tmp, path)
