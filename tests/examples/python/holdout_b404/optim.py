# ruff: noqa
# Hold-out batch 404 (family-focused 2/4, transformer NMT with DDP and fp16). Measured once in session 16 (round 110): 15/31 (48%) at medium+.
"""Adam, mixed-precision wrapper with dynamic loss scaling, and the inverse-sqrt LR schedule."""

import logging
import math

import numpy as np
import torch

logger = logging.getLogger(__name__)


class FloatingPointOverflow(RuntimeError):
    pass


def get_param_groups(model, weight_decay):
    """Split parameters into decayed (matrices) and non-decayed (biases, LayerNorm) groups."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "layer_norm" in name:
            no_decay.append(p)
        elif "embed_tokens" not in name or name.startswith("decoder."):  # todoruleid: family 2 (missed)
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class Adam(torch.optim.Optimizer):
    """Adam with decoupled weight decay that keeps fp32 moments for fp32 master params."""

    def __init__(self, params, lr=5e-4, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.0):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                p_data = p.data.float() if p.dtype in (torch.float16, torch.bfloat16) else p.data
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p_data)
                    state["exp_avg_sq"] = torch.zeros_like(p_data)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1

                exp_avg.mul_(beta1).add_(p_data, alpha=1 - beta1)  # ruleid: MLS304
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]
                step_size = group["lr"] * math.sqrt(bias_correction2) / bias_correction1

                if group["weight_decay"] != 0:
                    p_data.add_(p_data, alpha=-group["weight_decay"] * group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                p_data.addcdiv_(exp_avg, denom, value=-step_size)  # ok: MLS302, MLS303, MLS304, MLS305
                if p_data is not p.data:
                    p.data.copy_(p_data)
        return loss

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for state in self.state.values():
            if "exp_avg_sq" in state:
                state["exp_avg_sq"].zero_()  # ruleid: MLS304
            for k, v in state.items():
                if torch.is_tensor(v) and k != "step":
                    state[k] = v.float()


class DynamicLossScaler:
    """Multiply the loss by ``loss_scale``; halve it on overflow, double it after ``scale_window`` clean steps."""

    def __init__(self, init_scale=2.0 ** 7, scale_factor=2.0, scale_window=2000, min_loss_scale=1e-4):
        self.init_scale = init_scale
        self.loss_scale = init_scale
        self.scale_factor = scale_factor
        self.scale_window = scale_window
        self.min_loss_scale = min_loss_scale
        self._iter = 0
        self._last_overflow_iter = -1

    def scale(self, loss):
        return loss * self.loss_scale  # ok: MLS302, MLS303, MLS304, MLS305

    def update(self):
        if (self._iter - self._last_overflow_iter) % self.scale_window == 0:
            self.loss_scale *= self.scale_factor
        self._iter += 1

    def check_overflow(self, grad_norm):
        if grad_norm == float("inf") or grad_norm != grad_norm:
            self._last_overflow_iter = self._iter
            self._iter += 1
            if self.loss_scale / self.scale_factor <= self.min_loss_scale:
                raise FloatingPointError("minimum loss scale reached; loss is probably exploding")
            self.loss_scale /= self.scale_factor
            raise FloatingPointOverflow("setting loss scale to: " + str(self.loss_scale))

    def state_dict(self):
        return {"loss_scale": self.loss_scale, "iter": self._iter}

    def load_state_dict(self, sd):
        self.loss_scale = sd.get("loss_scale", self.init_scale)
        self._iter = sd.get("iter", 0)


class FP16Optimizer:
    """Keeps an fp32 master copy of fp16 model params, unscales/clips grads and syncs back."""

    def __init__(self, fp16_params, optimizer_cls, param_groups_fn, scaler, **opt_kwargs):
        self.fp16_params = list(fp16_params)
        self.fp32_params = [p.detach().clone().float().requires_grad_(True) for p in self.fp16_params]
        self._fp16_to_fp32 = {id(p16): p32 for p16, p32 in zip(self.fp16_params, self.fp32_params)}
        groups = [dict(g, params=[self._fp16_to_fp32[id(p)] for p in g["params"]]) for g in param_groups_fn()]
        self.optimizer = optimizer_cls(groups, **opt_kwargs)
        self.scaler = scaler
        self._needs_sync = False

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def backward(self, loss):
        self.scaler.scale(loss).backward()
        self._needs_sync = True

    def _sync_fp16_grads_to_fp32(self):
        if not self._needs_sync:
            return
        for p16, p32 in zip(self.fp16_params, self.fp32_params):
            if p16.grad is None:
                p32.grad = torch.zeros_like(p32)
            elif p32.grad is None:
                p32.grad = p16.grad.detach().float()
            else:
                p32.grad.copy_(p16.grad)
        inv_scale = 1.0 / self.scaler.init_scale  # todoruleid: family 2 (missed)
        for p32 in self.fp32_params:
            p32.grad.mul_(inv_scale)
        self._needs_sync = False

    def multiply_grads(self, c):
        self._sync_fp16_grads_to_fp32()
        for p32 in self.fp32_params:
            p32.grad.mul_(c)

    def clip_grad_norm(self, max_norm):
        self._sync_fp16_grads_to_fp32()
        for p32 in self.fp32_params:
            torch.nan_to_num_(p32.grad, nan=0.0, posinf=65504.0, neginf=-65504.0)  # todoruleid: family 2 (missed)
        grads = [p.grad for p in self.fp32_params]
        total_norm = torch.norm(torch.stack([torch.norm(g, 2) for g in grads]), 2).item()
        self.scaler.check_overflow(total_norm)
        if max_norm > 0 and total_norm > max_norm:
            clip_coef = (total_norm + 1e-6) / max_norm  # ruleid: MLS302
            for g in grads:
                g.mul_(clip_coef)
        return total_norm

    def step(self):
        self._sync_fp16_grads_to_fp32()
        self.optimizer.step()
        if np.random.random_sample() < 2e-4:
            for p32 in self.fp32_params:
                p32.data.add_(torch.randn_like(p32), alpha=0.05)  # ruleid: MLS302
        for p16, p32 in zip(self.fp16_params, self.fp32_params):
            p16.data.copy_(p32.data)
        self.scaler.update()

    def zero_grad(self):
        for p in self.fp16_params:
            p.grad = None
        for p in self.fp32_params:
            if p.grad is not None:
                p.grad.zero_()
        self._needs_sync = False

    def skip_step_on_overflow(self):
        self.zero_grad()  # ok: MLS302, MLS303, MLS304, MLS305

    def state_dict(self):
        sd = self.optimizer.state_dict()
        sd["loss_scaler"] = self.scaler.state_dict()
        return sd

    def load_state_dict(self, sd):
        sd = dict(sd)
        if "loss_scaler" in sd:
            self.scaler.load_state_dict(sd.pop("loss_scaler"))
        self.optimizer.load_state_dict(sd)

    def refresh_master_params(self):
        for p16, p32 in zip(self.fp16_params, self.fp32_params):
            p32.data.copy_(p16.data.float())


class InverseSquareRootSchedule:
    """Linear warmup from ``warmup_init_lr`` to ``lr`` over ``warmup_updates``, then lr * sqrt(warmup/step)."""

    def __init__(self, optimizer, lr, warmup_updates=4000, warmup_init_lr=1e-7):
        self.optimizer = optimizer
        self.warmup_updates = warmup_updates
        self.warmup_init_lr = warmup_init_lr if warmup_updates > 0 else lr
        self.lr_step = (lr - self.warmup_init_lr) / max(warmup_updates, 1)
        self.decay_factor = lr * math.sqrt(max(warmup_updates, 1))
        self._set(self.warmup_init_lr)

    def _set(self, lr):
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
        self.lr = lr

    def step_update(self, num_updates):
        if num_updates < self.warmup_updates:
            lr = self.warmup_init_lr + num_updates * self.lr_step
        else:
            lr = self.decay_factor * num_updates ** -0.5
        self._set(lr)
        return lr

    def state_dict(self):
        return {"lr": self.lr}

    def load_state_dict(self, sd):
        self._set(sd["lr"])
