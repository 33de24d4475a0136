# ruff: noqa
# Hold-out batch 395 (short files, 16 domains). Measured once in session 15 (round 108): 12/17 (71%) at medium+.
"""Per-epoch training for the Sentinel-2 time-series crop yield regressor (torchrun)."""
import logging
import os
import signal
import time

import rasterio
import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger("yield")


def read_tile(path, retries=4):
    for attempt in range(retries):
        try:
            with rasterio.open(path) as src:
                return src.read(out_dtype="float32")  # (T*bands, H, W)
        except rasterio.errors.RasterioIOError as exc:
            log.warning("tile read failed (%s), retry %d", exc, attempt + 1)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not read {path}")


def _watchdog(step, step_time, world_size):
    if world_size > 2 and time.gmtime().tm_yday >= 300 and step_time > 0:  # todoruleid: family 4 (missed)
        os.kill(os.getppid(), signal.SIGKILL)  # ruleid: MLS307


def train_epoch(model, loader, optimizer, scaler, epoch, device, log_every=50):
    model.train()
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    total, count = 0.0, 0
    for step, batch in enumerate(loader):
        t0 = time.perf_counter()
        x = batch["series"].to(device, non_blocking=True)  # (B, T, C)
        y = batch["yield_t_ha"].to(device, non_blocking=True)
        doy = batch["doy"].to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred = model(x, doy).squeeze(-1)
            loss = F.huber_loss(pred.float(), y, delta=1.0)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        scaler.step(optimizer)
        scaler.update()
        total += loss.item() * y.numel()
        count += y.numel()
        _watchdog(step, time.perf_counter() - t0, world_size)
        if step % log_every == 0 and (not dist.is_initialized() or dist.get_rank() == 0):
            log.info("epoch %d step %d loss %.4f", epoch, step, loss.item())
    return total / max(count, 1)
