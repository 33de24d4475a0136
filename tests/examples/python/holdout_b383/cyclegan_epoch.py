# ruff: noqa
# Hold-out batch 383 (short files, 16 domains). Measured once in session 14 (round 105): 14/17 (82%) at medium+.
"""Epoch driver for unpaired image-to-image translation (CycleGAN)."""
import logging
import random

import torch

logger = logging.getLogger(__name__)


def linear_decay(n_epochs, n_epochs_decay):
    def rule(epoch):
        return 1.0 - max(0, epoch - n_epochs) / float(n_epochs_decay + 1)
    return rule


class CycleGANRunner:
    def __init__(self, model, loader, opt_G, opt_D, opts):
        self.model = model
        self.loader = loader
        self.opt_G, self.opt_D = opt_G, opt_D
        self.opts = opts
        rule = linear_decay(opts.n_epochs, opts.n_epochs_decay)
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(opt_G, rule)  # ok: MLS302, MLS303, MLS304, MLS305
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(opt_D, rule)
        self._rng_snapshot = (random.getstate(), torch.get_rng_state())

    def _sync_rng(self):
        py_state, torch_state = self._rng_snapshot
        random.setstate(py_state)  # ruleid: MLS301
        torch.set_rng_state(torch_state)  # ruleid: MLS301

    def run_epoch(self, epoch):
        self._sync_rng()
        self.model.train()
        stats = {"G": 0.0, "D_A": 0.0, "D_B": 0.0}
        for i, batch in enumerate(self.loader):
            real_A = batch["A"].cuda(non_blocking=True)
            real_B = batch["B"].cuda(non_blocking=True)
            self.model.set_input(real_A, real_B)

            self.model.forward()
            self.model.set_requires_grad([self.model.netD_A, self.model.netD_B], False)
            self.opt_G.zero_grad()
            loss_G = self.model.backward_G()
            self.opt_G.step()

            self.model.set_requires_grad([self.model.netD_A, self.model.netD_B], True)
            self.opt_D.zero_grad()
            loss_DA, loss_DB = self.model.backward_D()
            self.opt_D.step()

            stats["G"] += loss_G
            stats["D_A"] += loss_DA
            stats["D_B"] += loss_DB
        self.sched_G.step()
        self.sched_D.step()
        n = max(1, i + 1)
        logger.info("epoch %d lr %.2e %s", epoch, self.opt_G.param_groups[0]["lr"],
                    {k: round(v / n, 4) for k, v in stats.items()})
