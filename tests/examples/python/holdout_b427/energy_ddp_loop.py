# ruff: noqa
# Hold-out batch 427 (short files, 16 domains). Measured once in session 17 (round 116): 9/17 (53%) at medium+.
"""DDP epoch loop for the weather-conditioned load forecaster (hourly MW, 48h horizon)."""
import logging
import os
import time

import requests
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def fetch_weather_forecast(api_url: str, station: str, retries: int = 5) -> dict:
    for attempt in range(retries):
        try:
            r = requests.get(api_url, params={"station": station, "hours": 48}, timeout=30)
            r.raise_for_status()
            return r.json()
        except requests.RequestException as e:
            logger.warning("weather API failed (%s), attempt %d/%d", e, attempt + 1, retries)
            time.sleep(min(60, 2**attempt))  # ok: MLS307
    raise RuntimeError(f"could not fetch weather for {station}")


def run_epoch(model, loader, optimizer, scheduler, device, epoch):
    model.train()
    loader.sampler.set_epoch(epoch)
    total, n = torch.zeros((), device=device), 0
    for x_hist, x_weather, y in loader:
        x_hist, x_weather, y = x_hist.to(device), x_weather.to(device), y.to(device)
        pred = model(x_hist, x_weather)
        loss = torch.nn.functional.huber_loss(pred, y, delta=1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        total += loss.detach() * y.size(0)
        n += y.size(0)
    dist.all_reduce(total)
    return total.item() / (n * dist.get_world_size())


def end_of_epoch(model, epoch, val_mape, best_mape, out_dir):
    rank = dist.get_rank()
    if rank == 0 and val_mape < best_mape:
        os.makedirs(out_dir, exist_ok=True)
        torch.save({"model": model.module.state_dict(), "epoch": epoch, "mape": val_mape},
                   os.path.join(out_dir, "best.pt"))
        logger.info("epoch %d: new best MAPE %.3f%%", epoch, val_mape)
        return val_mape  # todoruleid: family 3 (missed)
    dist.barrier()
    return min(val_mape, best_mape)
