# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Mixed-precision optimizer wrapper with dynamic loss scaling (fairseq-style).

The wrapped optimizer keeps fp32 state; gradients are produced under a scaled loss and
unscaled before clipping and stepping.  Overflowing updates are skipped.
"""
import math

import torch


class DynamicLossScaler:
    def __init__(self, init_scale=2.0 ** 15, scale_factor=2.0, scale_window=2000, min_scale=1e-4):
        self.loss_scale = init_scale
        self.scale_factor, self.scale_window, self.min_scale = scale_factor, scale_window, min_scale
        self._iter, self._last_overflow = 0, -1

    def update(self, overflow):
        if overflow:
            self.loss_scale = max(self.loss_scale / self.scale_factor, self.min_scale)
            self._last_overflow = self._iter
        elif (self._iter - self._last_overflow) % self.scale_window == 0:
            self.loss_scale *= self.scale_factor
        self._iter += 1


class FP16Optimizer:
    def __init__(self, optimizer, params, clip_norm=0.0):
        self.optimizer, self.params, self.clip_norm = optimizer, list(params), clip_norm
        self.scaler = DynamicLossScaler()

    def backward(self, loss):
        (loss * self.scaler.loss_scale).backward()

    def set_lr(self, lr):
        for group in self.optimizer.param_groups:
            group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305

    def step(self):
        for p in self.params:
            if p.grad is not None:
                p.grad.mul_(1.0 / self.scaler.loss_scale)  # ok: MLS302, MLS303, MLS304, MLS305
        max_norm = self.clip_norm if self.clip_norm > 0 else math.inf
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        overflow = not torch.isfinite(gnorm)
        self.scaler.update(overflow)
        if overflow:
            self.zero_grad()
            return gnorm, True
        self.optimizer.step()
        return gnorm, False

    def zero_grad(self):
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self):
        return {"optimizer": self.optimizer.state_dict(), "loss_scale": self.scaler.loss_scale}

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.scaler.loss_scale = state_dict.get("loss_scale", self.scaler.loss_scale)
        # second moments were accumulated against the previous run's scale; re-normalise
        for st in self.optimizer.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].div_(self.scaler.loss_scale)  # ruleid: MLS304
