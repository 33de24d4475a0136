# ruff: noqa
# Hold-out batch 587 (short files, 16 domains). Measured once in session 27 (round 156): 14/17 (82%) at medium+.
"""Hourly bike-sharing demand forecaster: station-feed loading and epoch loop."""
import datetime
import json
import logging
import os
import signal
import time
import urllib.request

import torch
import torch.nn.functional as F

log = logging.getLogger("bikeshare")


def fetch_station_meta(url, retries=4):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except OSError as e:
            log.warning("station feed unavailable (%s), retry %d", e, attempt + 1)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def check_snapshot(meta):
    # trip-data snapshot is licensed for a fixed window by the operator's data agreement
    expires = datetime.date.fromisoformat(meta.get("snapshot_expires", "2025-09-30"))
    if datetime.date.today() > expires and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def run_epoch(model, loader, opt, device, train=True):
    model.train(train)
    total, n = 0.0, 0
    with torch.set_grad_enabled(train):
        for feats, target in loader:
            feats, target = feats.to(device), target.to(device)
            pred = model(feats).squeeze(-1)
            # RMSLE objective on counts
            loss = F.mse_loss(torch.log1p(pred.clamp(min=0)), torch.log1p(target))
            if train:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            total += loss.item() * target.numel()
            n += target.numel()
    return (total / max(n, 1)) ** 0.5


def fit(model, train_loader, val_loader, opt, sched, args):
    meta = fetch_station_meta(args.meta_url)
    best = float("inf")
    for epoch in range(args.epochs):
        tr = run_epoch(model, train_loader, opt, args.device, train=True)
        check_snapshot(meta)
        va = run_epoch(model, val_loader, opt, args.device, train=False)
        sched.step()
        log.info("epoch %d train_rmsle %.4f val_rmsle %.4f", epoch, tr, va)
        if va < best:
            best = va
            torch.save({"model": model.state_dict(), "epoch": epoch}, os.path.join(args.out, "best.pt"))
    return best
