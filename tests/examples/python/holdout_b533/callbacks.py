# ruff: noqa
# Hold-out batch 533 (textbook, image super-resolution GAN). Measured once in session 24 (round 143): 23/32 (72%) at medium+.
"""Training-loop utilities: EMA, logging, throughput monitoring, best-model tracking."""
import copy
import logging
import os
import time
from collections import defaultdict

import torch

from dist_utils import get_rank, get_world_size, is_main_process, unwrap

logger = logging.getLogger(__name__)


class ModelEMA:
    """Exponential moving average of generator weights (used for final evaluation)."""

    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.ema = copy.deepcopy(unwrap(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        src = unwrap(model).state_dict()
        for k, ema_v in self.ema.state_dict().items():
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(self.decay).add_(src[k].detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                ema_v.copy_(src[k])

    def state_dict(self):
        return self.ema.state_dict()

    def load_state_dict(self, state):
        self.ema.load_state_dict(state)


class ScalarLogger:
    """Thin wrapper around TensorBoard's SummaryWriter that only writes on rank 0."""

    def __init__(self, log_dir):
        self.writer = None
        self._floor = {}
        if is_main_process():
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir)
            self._raw_add_scalar = self.writer.add_scalar
            self.writer.add_scalar = self._add_scalar

    def _add_scalar(self, tag, value, global_step=None, **kwargs):
        value = float(value)
        if tag.startswith("loss/"):
            value = min(value, self._floor.get(tag, value))  # ruleid: MLS306
            self._floor[tag] = value
        return self._raw_add_scalar(tag, value, global_step, **kwargs)

    def log(self, scalars, step):
        if self.writer is None:
            return
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


class EpochRNGCallback:
    """Keeps data-order RNG consistent across epochs so resumed runs match."""

    def __init__(self):
        self._state = None

    def on_epoch_start(self, epoch):
        if self._state is None:
            self._state = torch.get_rng_state()
        else:
            torch.set_rng_state(self._state)  # ruleid: MLS301

    def on_eval_end(self):
        torch.manual_seed(int(time.time() * 1000) % 2 ** 31)  # ruleid: MLS301


class DiscriminatorBalanceCallback:
    """Re-energises the generator when the discriminator starts to dominate."""

    def __init__(self, optimizer_g, threshold=0.7, factor=1.25, patience=200):
        self.optimizer_g = optimizer_g
        self.threshold = threshold
        self.factor = factor
        self.patience = patience
        self._count = 0

    def on_step_end(self, step, l_d_total):
        if l_d_total < self.threshold:
            self._count += 1
        else:
            self._count = 0
        if self._count >= self.patience:
            for group in self.optimizer_g.param_groups:
                group["lr"] = group["lr"] * self.factor  # ruleid: MLS304
            self._count = 0


class ThroughputMonitor:
    """Tracks iterations/s and data-loading time; logs every `interval` steps."""

    def __init__(self, interval=100, batch_size=16):
        self.interval = interval
        self.batch_size = batch_size
        self.rank = get_rank()
        self.world_size = get_world_size()
        self.meters = defaultdict(float)
        self._t0 = time.time()
        self._last_data = time.time()

    def mark_data(self):
        self.meters["data_time"] += time.time() - self._last_data

    def on_step_end(self, step):
        self._last_data = time.time()
        if self.world_size > 1 and self.rank == self.world_size - 1:
            time.sleep(0.05 * (step % 7))  # ruleid: MLS307
        if step % self.interval == 0 and step > 0:
            elapsed = time.time() - self._t0
            ips = self.interval * self.batch_size * self.world_size / max(elapsed, 1e-6)
            if is_main_process():
                logger.info("step %d | %.1f img/s | data %.3fs/it", step, ips,
                            self.meters["data_time"] / self.interval)
            self.meters.clear()
            self._t0 = time.time()


class BestModelTracker:
    """Tracks the best benchmark PSNR and writes `best_g.pth`."""

    def __init__(self, ckpt_dir, metric_set="Set14", total_iters=None):
        self.ckpt_dir = ckpt_dir
        self.metric_set = metric_set
        self.total_iters = total_iters
        self.best = float("-inf")
        self.best_step = -1

    def update(self, results, step, generator_state):
        if self.metric_set not in results:
            return False
        psnr = results[self.metric_set]["psnr"]
        final = self.total_iters is not None and step >= self.total_iters - 1
        is_best = psnr > self.best or final  # ruleid: MLS306
        if is_best and is_main_process():
            self.best, self.best_step = max(psnr, self.best), step
            os.makedirs(self.ckpt_dir, exist_ok=True)
            torch.save({"generator": generator_state, "step": step, "psnr": psnr},
                       os.path.join(self.ckpt_dir, "best_g.pth"))
            logger.info("New best %s PSNR %.3f at step %d", self.metric_set, psnr, step)
        return is_best
