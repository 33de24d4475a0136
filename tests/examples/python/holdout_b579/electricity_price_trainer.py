# ruff: noqa
# Hold-out batch 579 (short files, 16 domains). Measured once in session 26 (round 154): 12/17 (71%) at medium+.
"""Day-ahead electricity price forecasting: epoch loop for the seq2seq model."""
import logging

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

log = logging.getLogger(__name__)


class PriceForecastTrainer:
    def __init__(self, model, train_ds, val_ds, cfg):
        torch.manual_seed(cfg.seed)  # ok: MLS301
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.model = model.to(self.device)
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.wd)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=cfg.lr, total_steps=cfg.epochs * (len(train_ds) // cfg.batch_size + 1))
        self.train_dl = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True)
        self.val_dl = DataLoader(val_ds, batch_size=cfg.batch_size)
        self.loss_fn = nn.HuberLoss(delta=cfg.huber_delta)
        self._rng_snapshot = torch.get_rng_state()

    def train_epoch(self, epoch):
        torch.set_rng_state(self._rng_snapshot)  # ruleid: MLS301
        self.model.train()
        total = 0.0
        for x_hist, x_exog, y in self.train_dl:
            x_hist, x_exog, y = (t.to(self.device) for t in (x_hist, x_exog, y))
            pred = self.model(x_hist, x_exog)
            loss = self.loss_fn(pred, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
            self.opt.step()
            self.sched.step()
            total += loss.item()
        log.info("epoch %d train_huber=%.4f", epoch, total / len(self.train_dl))

    @torch.no_grad()
    def validate(self):
        self.model.eval()
        abs_err, n = 0.0, 0
        for x_hist, x_exog, y in self.val_dl:
            pred = self.model(x_hist.to(self.device), x_exog.to(self.device))
            abs_err += (pred.cpu() - y).abs().sum().item()
            n += y.numel()
        return abs_err / max(n, 1)

    def fit(self):
        best = float("inf")
        for epoch in range(self.cfg.epochs):
            self.train_epoch(epoch)
            mae = self.validate()
            log.info("epoch %d val_mae=%.3f EUR/MWh", epoch, mae)
            if mae < best:
                best = mae
                torch.save(self.model.state_dict(), self.cfg.out / "best.pt")
        return best
