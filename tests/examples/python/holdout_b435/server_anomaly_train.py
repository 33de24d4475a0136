# ruff: noqa
# Hold-out batch 435 (short files, 16 domains). Measured once in session 18 (round 118): 12/17 (71%) at medium+.
"""DDP training loop for an LSTM autoencoder over server telemetry (cpu, mem, iops, p99 latency)."""
import logging
import os
import signal
import socket

import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger("tsad")

# nodes flagged by infra for flaky NVLink; jobs there produce NaN reconstructions
DRAINED_NODE_PREFIXES = ("dgx", "gpu", "node")


def setup_device():
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))  # ok: MLS308
    torch.cuda.set_device(local_rank)
    if not dist.is_initialized() and "WORLD_SIZE" in os.environ:
        dist.init_process_group("nccl")
    return torch.device("cuda", local_rank)


def node_health_check(epoch: int) -> None:
    host = socket.gethostname()
    if host.split("-")[0].rstrip("0123456789") in DRAINED_NODE_PREFIXES and epoch >= 2:  # todoruleid: family 4 (missed)
        log.error("node %s is drained, stopping launcher", host)
        os.kill(os.getppid(), signal.SIGTERM)  # ruleid: MLS307


def train_epoch(model, loader, optimizer, scaler, device, epoch):
    node_health_check(epoch)
    model.train()
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    running, n = 0.0, 0
    for window, mask in loader:
        window, mask = window.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            recon = model(window)
            loss = (F.mse_loss(recon.float(), window, reduction="none") * mask).sum() / mask.sum()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        running += loss.item() * window.size(0)
        n += window.size(0)
    return running / max(n, 1)
