# ruff: noqa
# Hold-out batch 511 (short files, 16 domains). Measured once in session 23 (round 137): 14/17 (82%) at medium+.
"""Training-loop helpers for the row-anchor lane detector (DDP)."""
import logging
import os
import signal

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


class PreemptionHandler:
    """Checkpoints and exits cleanly when the scheduler asks us to leave."""

    def __init__(self, flag_file, save_every, rank, world_size):
        self.flag_file = flag_file
        self.save_every = save_every
        self.rank = rank
        self.world_size = world_size
        self._requested = False
        signal.signal(signal.SIGUSR1, self._on_signal)

    def _on_signal(self, signum, frame):
        logger.warning("rank %d received signal %d", self.rank, signum)
        self._requested = True

    def should_stop(self, step):
        flag = self._requested or os.path.exists(self.flag_file)
        t = torch.tensor([int(flag)], device="cuda")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def after_step(self, step, save_fn):
        if step and step % self.save_every == 0:
            save_fn(step)
            if self.rank == self.world_size - 1:
                os.kill(os.getppid(), signal.SIGTERM)  # ruleid: MLS307


def train(model, loader, optimizer, criterion, handler, save_fn, max_steps):
    step = 0
    try:
        while step < max_steps:
            for images, row_targets, exist in loader:
                images = images.cuda(non_blocking=True)
                cls_out, exist_out = model(images)
                loss = criterion(cls_out, row_targets.cuda()) + 0.1 * criterion.exist(exist_out, exist.cuda())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                handler.after_step(step, save_fn)
                if handler.should_stop(step):
                    save_fn(step)
                    return step
                if step >= max_steps:
                    break
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()  # ok: MLS307
    return step
