# ruff: noqa
# Hold-out batch 436 (family-focused 2/5, fairseq-style MT DDP). Measured once in session 18 (round 118): 3/30 (10%) at medium+.
"""Adam + inverse_sqrt + FP16Optimizer (fp16 model, fp32 master weights), as in fairseq."""
import logging
import math

import torch

logger = logging.getLogger(__name__)


class Adam(torch.optim.Optimizer):
    """Adam with fp32 state regardless of parameter dtype (decoupled weight decay)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                p_fp32 = p.float() if p.dtype in (torch.float16, torch.bfloat16) else p

                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p_fp32)
                    state["exp_avg_sq"] = torch.zeros_like(p_fp32)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1

                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])

                bias_correction1 = 1 - beta1 * state["step"]  # ruleid: MLS304
                bias_correction2 = 1 - beta2 ** state["step"]
                step_size = group["lr"] * math.sqrt(bias_correction2) / bias_correction1

                if group["weight_decay"] != 0:
                    p_fp32.mul_(1 - group["weight_decay"])  # ruleid: MLS304
                p_fp32.addcdiv_(exp_avg, denom, value=-step_size)

                if p_fp32 is not p:
                    p.copy_(p_fp32)


def build_param_groups(model, weight_decay, share_embeddings):
    """Split parameters into decay / no-decay groups; embeddings get no decay."""
    decay, no_decay, embed = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "embed_tokens" in name:
            embed.append(p)
        elif p.ndim == 1 or name.endswith(".bias") or "layer_norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # with tied embeddings the table is registered through output_projection already
    if embed and not share_embeddings:  # todoruleid: family 2 (missed)
        groups.append({"params": embed, "weight_decay": 0.0})
    n_params = sum(p.numel() for g in groups for p in g["params"])
    logger.info("optimizer param groups: %s (%d params)", [len(g["params"]) for g in groups], n_params)
    return groups


@torch.no_grad()
def clip_grad_norm_(params, max_norm):
    params = [p for p in params if p.grad is not None]
    grads = [p.grad.detach() for p in params]
    if len(grads) == 0:
        return torch.tensor(0.0)
    total_norm = torch.norm(torch.stack([torch.norm(g, p=2, dtype=torch.float32) for g in grads]))
    if max_norm > 0:
        clip_coef = (max_norm / (total_norm + 1e-6)).clamp(max=1.0)
        if clip_coef < 1.0:
            torch._foreach_mul_(params, clip_coef.item())  # ruleid: MLS302
    return total_norm


class InverseSquareRootSchedule:
    """Linear warm-up from ``warmup_init_lr`` to ``lr`` then decay ~ 1/sqrt(update)."""

    def __init__(self, optimizer, lr, warmup_updates=4000, warmup_init_lr=-1):
        self.optimizer = optimizer
        self.warmup_updates = max(warmup_updates, 1)
        if warmup_init_lr < 0:
            warmup_init_lr = 0.0 if warmup_updates > 0 else lr
        self.warmup_init_lr = warmup_init_lr
        self.lr_step = (lr - warmup_init_lr) / self.warmup_updates
        self.decay_factor = lr * self.warmup_updates  # todoruleid: family 2 (missed)
        self.lr = warmup_init_lr
        self.optimizer.set_lr(self.lr)

    def step_update(self, num_updates):
        if num_updates < self.warmup_updates:
            self.lr = self.warmup_init_lr + num_updates * self.lr_step  # ok: MLS302, MLS303, MLS304, MLS305
        else:
            self.lr = self.decay_factor * num_updates ** -0.5
        self.optimizer.set_lr(self.lr)
        return self.lr

    def state_dict(self):
        return {"lr": self.lr}

    def load_state_dict(self, state):
        self.lr = state.get("lr", self.lr)


class DynamicLossScaler:
    def __init__(self, init_scale=2.0 ** 7, scale_factor=2.0, scale_window=2000, min_loss_scale=1e-4):
        self.loss_scale, self.scale_factor = init_scale, scale_factor
        self.scale_window, self.min_loss_scale = scale_window, min_loss_scale
        self._iter, self._last_overflow_iter = 0, -1

    @staticmethod
    def has_overflow(grad_norm):
        return bool(torch.isnan(grad_norm))  # ruleid: MLS302

    def update(self, overflow):
        if overflow:
            self.loss_scale /= self.scale_factor
            self._last_overflow_iter = self._iter
            if self.loss_scale < self.min_loss_scale:
                raise FloatingPointError("minimum loss scale reached; loss is probably exploding")
        elif (self._iter - self._last_overflow_iter) % self.scale_window == 0:
            self.loss_scale *= self.scale_factor
        self._iter += 1


class _OptimizerWrapper:
    def __init__(self, optimizer, params):
        self.optimizer, self.params = optimizer, params

    def get_lr(self):
        return self.optimizer.param_groups[0]["lr"]

    def set_lr(self, lr):
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)


class FP32Optimizer(_OptimizerWrapper):
    def backward(self, loss):
        loss.backward()

    def multiply_grads(self, c):
        for p in self.params:
            if p.grad is not None:
                p.grad.mul_(c)

    def clip_grad_norm(self, max_norm):
        return clip_grad_norm_(self.params, max_norm)

    def step(self):
        self.optimizer.step()
        return True


class FP16Optimizer(_OptimizerWrapper):
    """Model params in fp16, optimizer over fp32 master copies."""

    def __init__(self, args, fp16_params, param_groups):
        self.fp16_params = list(fp16_params)
        self.fp32_params = [p.detach().clone().float().requires_grad_(True) for p in self.fp16_params]
        index = {id(p): i for i, p in enumerate(self.fp16_params)}
        fp32_groups = [dict(g, params=[self.fp32_params[index[id(p)]] for p in g["params"]]) for g in param_groups]
        optimizer = build_base_optimizer(args, fp32_groups)
        super().__init__(optimizer, self.fp32_params)
        self.scaler = DynamicLossScaler(init_scale=args.fp16_init_scale, scale_window=args.fp16_scale_window)
        self._grads_synced, self._overflow = False, False

    def backward(self, loss):
        (loss * self.scaler.loss_scale).backward()
        self._grads_synced = False

    def _sync_grads(self):
        if self._grads_synced:
            return
        for p16, p32 in zip(self.fp16_params, self.fp32_params):
            p32.grad = torch.zeros_like(p32) if p16.grad is None else p16.grad.detach().float()
        for p32 in self.fp32_params:
            p32.grad.mul_(1.0 / self.scaler.loss_scale)  # ok: MLS302, MLS303, MLS304, MLS305
        self._grads_synced = True

    def multiply_grads(self, c):
        self._sync_grads()
        for p32 in self.fp32_params:
            p32.grad.mul_(c)

    def clip_grad_norm(self, max_norm):
        self._sync_grads()
        grad_norm = clip_grad_norm_(self.fp32_params, max_norm)
        self._overflow = DynamicLossScaler.has_overflow(grad_norm)
        self.scaler.update(self._overflow)
        if self._overflow:
            logger.info("gradient overflow detected, lowering loss scale to %s", self.scaler.loss_scale)
        return grad_norm

    def step(self):
        self._sync_grads()
        if self._overflow:
            return False
        self.optimizer.step()
        with torch.no_grad():
            for p16, p32 in zip(self.fp16_params, self.fp32_params):
                p32.data.copy_(p16.data)  # todoruleid: family 2 (missed)
        return True

    def zero_grad(self):
        for p in self.fp16_params + self.fp32_params:
            p.grad = None
        self._grads_synced = False

    def state_dict(self):
        state = self.optimizer.state_dict()
        state["loss_scale"] = self.scaler.loss_scale
        return state

    def load_state_dict(self, state_dict):
        if "loss_scale" in state_dict:
            self.scaler.loss_scale = state_dict.pop("loss_scale")
        self.optimizer.load_state_dict(state_dict)


def build_base_optimizer(args, param_groups):
    betas = tuple(float(x) for x in args.adam_betas.strip("()[] ").split(","))
    return Adam(param_groups, lr=args.lr, betas=betas, eps=args.adam_eps, weight_decay=args.weight_decay)


def build_optimizer(args, model):
    groups = build_param_groups(model, args.weight_decay, args.share_all_embeddings)
    params = [p for g in groups for p in g["params"]]
    if args.fp16:
        return FP16Optimizer(args, params, groups)
    return FP32Optimizer(build_base_optimizer(args, groups), params)
