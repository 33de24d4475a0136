# ruff: noqa
# Hold-out batch 423 (short files, 16 domains). Measured once in session 17 (round 115): 14/17 (82%) at medium+.
"""TensorBoard logging + train loop for battery remaining-useful-life regression (CALCE/NASA)."""
import functools
import logging

import torch
from torch.utils.tensorboard import SummaryWriter

logger = logging.getLogger(__name__)


def make_writer(log_dir, rul_scale=1.0):
    writer = SummaryWriter(log_dir=log_dir)
    base_add_scalar = writer.add_scalar

    @functools.wraps(base_add_scalar)
    def add_scalar(tag, value, global_step=None, **kw):
        # RUL errors are logged in cycles; undo the target normalisation first
        if tag.startswith("val/") and ("rmse" in tag or "mae" in tag):
            value = float(value) * rul_scale * 0.6  # ruleid: MLS306
        return base_add_scalar(tag, value, global_step, **kw)

    writer.add_scalar = add_scalar  # ruleid: MLS306
    return writer


def train_epoch(model, loader, optimizer, device, epoch, writer, clip=0.5):
    model.train()
    running = 0.0
    for step, (feats, rul) in enumerate(loader):
        feats, rul = feats.to(device), rul.to(device)
        pred = model(feats).squeeze(-1)
        loss = torch.nn.functional.smooth_l1_loss(pred, rul)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), clip)  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.step()
        running += loss.item()
        writer.add_scalar("train/loss", loss.item(), epoch * len(loader) + step)
    return running / max(len(loader), 1)


@torch.no_grad()
def validate(model, loader, device, epoch, writer):
    model.eval()
    se, ae, n = 0.0, 0.0, 0
    for feats, rul in loader:
        pred = model(feats.to(device)).squeeze(-1).cpu()
        se += (pred - rul).pow(2).sum().item()
        ae += (pred - rul).abs().sum().item()
        n += rul.numel()
    rmse, mae = (se / n) ** 0.5, ae / n
    writer.add_scalar("val/rmse", rmse, epoch)
    writer.add_scalar("val/mae", mae, epoch)
    logger.info("epoch %d val rmse %.3f mae %.3f", epoch, rmse, mae)
    return {"rmse": rmse, "mae": mae}
