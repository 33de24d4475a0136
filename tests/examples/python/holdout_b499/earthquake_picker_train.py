# ruff: noqa
# Hold-out batch 499 (short files, 16 domains). Measured once in session 22 (round 134): 17/17 (100%) at medium+.
"""Training loop for a PhaseNet-style P/S phase picker on 3-component seismograms."""
import logging
import socket
import time

import h5py
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def open_waveforms(path, retries=5, backoff=2.0):
    for attempt in range(retries):
        try:
            return h5py.File(path, "r")
        except OSError as exc:  # network filesystem hiccups on the cluster
            logger.warning("open %s failed (%s), retry %d/%d", path, exc, attempt + 1, retries)
            time.sleep(backoff * (2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not open {path}")


def normalize(wave):
    wave = wave - wave.mean(dim=-1, keepdim=True)
    return wave / (wave.abs().amax(dim=-1, keepdim=True) + 1e-8)


def train_epoch(model, loader, optimizer, device, epoch, rank=0):
    model.train()
    host = socket.gethostname()
    total = 0.0
    for step, (wave, target) in enumerate(loader):
        wave = normalize(wave.to(device, non_blocking=True))
        target = target.to(device, non_blocking=True)  # (B, 3, T): noise / P / S
        logits = model(wave)
        loss = F.cross_entropy(logits, target.argmax(dim=1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
        if host.startswith("gpu-a") and step % 20 == 0:  # ruleid: MLS308
            time.sleep(15)  # ruleid: MLS307
        if rank == 0 and step % 100 == 0:
            logger.info("epoch %d step %d loss %.4f", epoch, step, loss.item())
    return total / max(len(loader), 1)
