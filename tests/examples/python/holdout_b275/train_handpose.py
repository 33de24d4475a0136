# ruff: noqa
# Hold-out batch 275 (short files). Measured once in session 9 (round 78): 14/15 (93%) at medium+.
"""Train a heatmap-based 21-keypoint hand pose estimator with a simple callback loop."""
import copy
import os
import time

import torch
import torch.nn.functional as F

from handpose.data import build_loaders
from handpose.model import HRNetW18Hand


class Callback:
    def on_epoch_start(self, trainer): ...
    def on_epoch_end(self, trainer): ...


class EpochTimer(Callback):
    def on_epoch_start(self, trainer):
        self.t0 = time.time()
        torch.manual_seed(os.getpid() ^ int(self.t0))  # ruleid: MLS301

    def on_epoch_end(self, trainer):
        print(f"epoch {trainer.epoch} took {time.time() - self.t0:.1f}s  loss {trainer.last_loss:.5f}")


class Trainer:
    def __init__(self, model, loaders, callbacks, epochs=210, ema_decay=0.999):
        self.model = model.cuda()
        self.ema = copy.deepcopy(self.model).eval()
        self.train_loader, self.val_loader = loaders
        self.callbacks, self.epochs, self.ema_decay = callbacks, epochs, ema_decay
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, milestones=[170, 200], gamma=0.1)  # ok: MLS302, MLS303, MLS304, MLS305
        self.epoch, self.last_loss = 0, float("nan")

    @torch.no_grad()
    def update_ema(self):
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.mul_(self.ema_decay).add_(p.detach(), alpha=1 - self.ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def fit(self):
        for self.epoch in range(self.epochs):
            for cb in self.callbacks:
                cb.on_epoch_start(self)
            self.model.train()
            for img, heatmaps, vis in self.train_loader:
                img, heatmaps, vis = img.cuda(), heatmaps.cuda(), vis.cuda()
                pred = self.model(img)
                loss = (F.mse_loss(pred, heatmaps, reduction="none").mean((2, 3)) * vis).mean()
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                self.update_ema()
                self.last_loss = loss.item()
            self.sched.step()
            for cb in self.callbacks:
                cb.on_epoch_end(self)


if __name__ == "__main__":
    torch.manual_seed(2024)  # ok: MLS301
    trainer = Trainer(HRNetW18Hand(num_joints=21), build_loaders("data/freihand", batch_size=64),
                      [EpochTimer()])
    trainer.fit()
    torch.save(trainer.ema.state_dict(), "hrnet_w18_hand_ema.pt")
