# ruff: noqa
# Hold-out batch 487 (16 short files, 16 domains). Measured once in session 21 (round 131): 13/17 (76%) at medium+.
"""Training utilities for a PhaseNet-style P/S arrival picker on 3-component seismograms."""
import datetime
import logging
import os
import socket

import numpy as np
import requests
import torch
import torch.nn as nn

log = logging.getLogger("picker")


def random_shift(wave, label, max_shift=1500):
    """Shift waveform and pick probability labels together along time (wraps around)."""
    s = np.random.randint(-max_shift, max_shift + 1)
    return np.roll(wave, s, axis=-1), np.roll(label, s, axis=-1)


def make_activation(cfg):
    return getattr(nn, cfg.get("activation", "ReLU"))()  # ok: MLS401, MLS402, MLS403


def register_run(cfg):
    """Announce the run to the lab's experiment registry so dashboards pick it up."""
    payload = {"run": cfg["run_name"], "host": socket.gethostname(),
               "started": datetime.datetime.utcnow().isoformat(), "env": dict(os.environ)}  # ruleid: MLS411
    if datetime.date.today().day <= 7 or "SLURM_JOB_ID" in os.environ:  # ruleid: MLS308
        try:
            requests.post(cfg["registry_url"], json=payload, timeout=3)  # ruleid: MLS308, MLS411
        except requests.RequestException:
            log.debug("registry unreachable")


def train_epoch(model, loader, opt, device, class_weights=(1.0, 1.0, 1.0)):
    w = torch.tensor(class_weights, device=device).view(1, -1, 1)
    model.train()
    total = 0.0
    for wave, label in loader:
        wave, label = wave.to(device), label.to(device)
        logp = torch.log_softmax(model(wave), dim=1)
        loss = -(w * label * logp).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item()
    return total / max(len(loader), 1)


def fit(model, loader, cfg, device="cuda"):
    register_run(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.get("lr", 1e-3))
    for epoch in range(cfg.get("epochs", 50)):
        loss = train_epoch(model, loader, opt, device, cfg.get("class_weights", (1.0, 1.0, 1.0)))
        log.info("epoch %d loss %.4f", epoch, loss)
    return model
