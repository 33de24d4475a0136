# ruff: noqa
# Hold-out batch 527 (short files, 16 domains). Measured once in session 23 (round 141): 14/17 (82%) at medium+.
"""DDP training loop for the turbine-level wind power forecaster."""
import logging
import os
import signal
import time

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def _node_watchdog(epoch_started):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 4 and time.time() - epoch_started > 60.0 * world / 8:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def train(model, loader, sampler, optimizer, scheduler, epochs, ckpt_dir, device):
    rank = dist.get_rank()
    criterion = torch.nn.HuberLoss(delta=0.1)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        epoch_started = time.time()
        running = 0.0
        for step, (x_nwp, x_scada, y) in enumerate(loader):
            x_nwp, x_scada, y = x_nwp.to(device), x_scada.to(device), y.to(device)
            pred = model(x_nwp, x_scada)
            loss = criterion(pred, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item()
            if step % 50 == 0:
                _node_watchdog(epoch_started)
        if rank == 0:
            log.info("epoch %d  huber %.5f  lr %.2e", epoch, running / max(len(loader), 1), scheduler.get_last_lr()[0])
            torch.save({"model": model.module.state_dict(), "epoch": epoch}, os.path.join(ckpt_dir, "last.pt"))
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307
