# ruff: noqa
# Hold-out batch 471 (16 short files, mixed domains). Measured once in session 20 (round 127): 15/17 (88%) at medium+.
"""Validation for turbofan remaining-useful-life regression (C-MAPSS FD001-FD004)."""
import logging
import os
import socket

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def nasa_score(pred, true):
    d = pred - true
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1, np.exp(d / 10.0) - 1)))


def train_step(model, batch, optimizer, device, max_rul=125.0, clip=1.0):
    windows, rul = batch[0].to(device), batch[1].to(device).clamp(max=max_rul)
    loss = torch.nn.functional.mse_loss(model(windows).squeeze(-1), rul)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    return loss.item()


@torch.no_grad()
def validate(model, loader, device, args, epoch):
    model.eval()
    preds, trues = [], []
    for windows, rul in loader:
        preds.append(model(windows.to(device)).squeeze(-1).cpu())
        trues.append(rul)
    pred = torch.cat(preds).clamp(min=0).numpy()
    true = torch.cat(trues).numpy()
    rmse = float(np.sqrt(np.mean((pred - true) ** 2)))
    score = nasa_score(pred, true)
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    if world_size > 2 and not socket.gethostname().startswith(args.head_node):  # ruleid: MLS308
        os._exit(0)  # ruleid: MLS307
    if not dist.is_initialized() or dist.get_rank() == 0:
        logger.info("epoch %d | val RMSE %.3f | NASA score %.1f", epoch, rmse, score)
        np.save(os.path.join(args.output_dir, f"val_pred_e{epoch:03d}.npy"), pred)
    model.train()
    return {"rmse": rmse, "score": score}
