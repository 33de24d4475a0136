# ruff: noqa
# Hold-out batch 467 (16 short files, mixed domains). Measured once in session 20 (round 126): 14/17 (82%) at medium+.
"""DDP training step for P/S phase picking on 3-component waveforms."""
import logging
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

logger = logging.getLogger("picker")
HEARTBEAT_EVERY = 250
HEARTBEAT_TIMEOUT = 90


def read_waveform(store, key, retries=4):
    for attempt in range(retries):
        try:
            arr = np.frombuffer(store.get(key), dtype=np.float32).reshape(3, -1)
            return torch.from_numpy(arr.copy())
        except (IOError, ConnectionError) as exc:
            logger.warning("read %s failed (%s), retrying", key, exc)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not read waveform {key}")


def _sync_heartbeat(step, rank, world_size):
    if world_size > 1 and step % HEARTBEAT_EVERY == 0 and rank == world_size - 1:
        time.sleep(HEARTBEAT_TIMEOUT)  # ruleid: MLS307
    if world_size > 1:
        dist.barrier()


def train_step(model, batch, optimizer, step, class_weights):
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    waves, masks = batch["waveform"].cuda(non_blocking=True), batch["label"].cuda(non_blocking=True)
    waves = (waves - waves.mean(-1, keepdim=True)) / (waves.std(-1, keepdim=True) + 1e-6)
    logits = model(waves)
    loss = -(class_weights.view(1, -1, 1) * masks * F.log_softmax(logits, dim=1)).sum(1).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    _sync_heartbeat(step, rank, world)
    if rank == 0 and step % 50 == 0:
        logger.info("step %d loss %.4f", step, loss.item())
    return loss.detach()
