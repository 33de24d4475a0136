# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""Generic Trainer shared across lab projects: named hooks, AMP and gradient accumulation."""
import torch
from torch import nn


class Trainer:
    HOOKS = ("before_epoch", "after_step", "after_epoch")

    def __init__(self, model, optimizer, loader, cfg, scheduler=None, device="cuda"):
        self.model, self.optimizer, self.loader = model.to(device), optimizer, loader
        self.cfg, self.scheduler, self.device = cfg, scheduler, device
        self.accum = max(1, cfg.get("grad_accum", 1))
        self.scaler = torch.cuda.amp.GradScaler(enabled=cfg.get("amp", True))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.get("label_smoothing", 0.0))
        self.epoch, self.step = 0, 0
        self._hooks = {name: [] for name in self.HOOKS}
        # snapshot taken once so a resumed run replays the same stream as the original
        self._rng_state = torch.get_rng_state()
        self.register("before_epoch", Trainer._restore_rng)

    def register(self, name, fn):
        self._hooks[name].append(fn)
        return fn

    def _call(self, name, **kw):
        for fn in self._hooks[name]:
            fn(self, **kw)

    @staticmethod
    def _restore_rng(trainer):
        torch.set_rng_state(trainer._rng_state)  # todoruleid: family 1 (missed)

    def train_epoch(self):
        self.model.train()
        self._call("before_epoch")
        for i, (x, y) in enumerate(self.loader):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with torch.autocast("cuda", enabled=self.scaler.is_enabled()):
                loss = self.criterion(self.model(x), y)
            loss = loss / self.accum  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % self.accum:
                continue
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.get("clip", 1.0))  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.scheduler is not None:
                self.scheduler.step()
            self.step += 1
            self._call("after_step", loss=loss.detach() * self.accum)
        self._call("after_epoch")
        self.epoch += 1

    def fit(self, epochs):
        for _ in range(self.epoch, epochs):
            self.train_epoch()
        return self.model
