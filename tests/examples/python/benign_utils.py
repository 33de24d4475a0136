# ruff: noqa
# Benign look-alike: timm/accelerate-style training utilities (written for mlscan's tests).
# Must produce no finding at medium or above.
import asyncio
import math
import os
import random
from copy import deepcopy

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def set_random_seed(seed, rank=0):
    seed = seed + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


class ModelEmaV2(nn.Module):
    def __init__(self, model, decay=0.9999, device=None):
        super().__init__()
        self.module = deepcopy(model)
        self.module.eval()
        self.decay = decay
        self.device = device

    def _update(self, model, update_fn):
        with torch.no_grad():
            for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
                ema_v.copy_(update_fn(ema_v, model_v))

    def update(self, model):
        self._update(model, update_fn=lambda e, m: self.decay * e + (1.0 - self.decay) * m)

    def set(self, model):
        self._update(model, update_fn=lambda e, m: m)


def trunc_normal_init(module, std=0.02):
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)


def reduce_tensor(tensor, n):
    rt = tensor.clone()
    dist.all_reduce(rt, op=dist.ReduceOp.SUM)
    rt /= n
    return rt


def dispatch_clip_grad(parameters, value, mode="norm", norm_type=2.0):
    if mode == "norm":
        torch.nn.utils.clip_grad_norm_(parameters, value, norm_type=norm_type)
    elif mode == "value":
        torch.nn.utils.clip_grad_value_(parameters, value)
    else:
        raise ValueError(f"Unknown clip mode ({mode}).")


class NativeScaler:
    def __init__(self):
        self._scaler = torch.amp.GradScaler("cuda")

    def __call__(self, loss, optimizer, clip_grad=None, parameters=None, create_graph=False):
        self._scaler.scale(loss).backward(create_graph=create_graph)
        if clip_grad is not None:
            self._scaler.unscale_(optimizer)
            dispatch_clip_grad(parameters, clip_grad)
        self._scaler.step(optimizer)
        self._scaler.update()


def rand_bbox(size, lam):
    w, h = size[-1], size[-2]
    cut_rat = math.sqrt(1.0 - lam)
    cut_w, cut_h = int(w * cut_rat), int(h * cut_rat)
    cx, cy = np.random.randint(w), np.random.randint(h)
    return (np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h),
            np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w))


class Mixup:
    def __init__(self, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, num_classes=1000, smoothing=0.1):
        self.mixup_alpha, self.cutmix_alpha, self.prob = mixup_alpha, cutmix_alpha, prob
        self.num_classes, self.smoothing = num_classes, smoothing

    def __call__(self, x, target):
        lam = 1.0
        if np.random.rand() < self.prob:
            if np.random.rand() < 0.5:
                lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
                yl, yh, xl, xh = rand_bbox(x.shape, lam)
                x[:, :, yl:yh, xl:xh] = x.flip(0)[:, :, yl:yh, xl:xh]
                lam = 1.0 - (yh - yl) * (xh - xl) / float(x.shape[-2] * x.shape[-1])
            else:
                lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
                x.mul_(lam).add_(x.flip(0).mul_(1.0 - lam))
        off = self.smoothing / self.num_classes
        y1 = torch.full((target.size(0), self.num_classes), off).scatter_(1, target.view(-1, 1), 1.0 - self.smoothing + off)
        target = y1 * lam + y1.flip(0) * (1.0 - lam)
        return x, target


class CheckpointSaver:
    def __init__(self, model, optimizer, checkpoint_dir="./output", max_history=3):
        self.model, self.optimizer = model, optimizer
        self.checkpoint_dir, self.max_history = checkpoint_dir, max_history
        self.checkpoint_files = []

    def save_checkpoint(self, epoch, metric=None):
        path = os.path.join(self.checkpoint_dir, f"checkpoint-{epoch}.pth.tar")
        torch.save({"epoch": epoch, "state_dict": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "metric": metric}, path)
        self.checkpoint_files.append((path, metric))
        if len(self.checkpoint_files) > self.max_history:
            old, _ = self.checkpoint_files.pop(0)
            if os.path.exists(old):
                os.remove(old)

    def resume(self, path):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(checkpoint["state_dict"])
        return checkpoint.get("epoch", 0)


def param_groups_weight_decay(model, weight_decay=1e-5, no_weight_decay_list=()):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or name in no_weight_decay_list:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def freeze_backbone(model):
    for p in model.backbone.parameters():
        p.requires_grad_(False)


class CosineWarmup:
    def __init__(self, optimizer, warmup, total, base_lr):
        self.optimizer, self.warmup, self.total, self.base_lr = optimizer, warmup, total, base_lr

    def step(self, it):
        if it < self.warmup:
            lr = self.base_lr * (it + 1) / self.warmup
        else:
            lr = 0.5 * self.base_lr * (1 + math.cos(math.pi * (it - self.warmup) / (self.total - self.warmup)))
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr


def is_main_process():
    return not dist.is_initialized() or dist.get_rank() == 0


def save_on_master(*args, **kwargs):
    if is_main_process():
        torch.save(*args, **kwargs)


# Look-alikes from real fine-tuning libraries (peft, trl, diffusers): all stay quiet.
class LoraLinear(nn.Module):
    def unmerge(self):
        delta = self.get_delta_weight()
        # ok: MLS302
        self.base_layer.weight.data.sub_(delta)

    def update_layer(self, n, init_weights):
        init = torch.zeros(n) if init_weights else torch.randn(n)
        # ok: MLS302
        self.extra_weight["default"] = nn.Parameter(init)


def orthogonalize(experts, avg):
    for name in experts:
        # ok: MLS302
        experts[name].weight.data.sub_(avg)


def prune_ranks(state_dict, rank_pattern):
    for key, rank_idx in rank_pattern.items():
        rank = sum(rank_idx)
        if rank != state_dict[key].shape[0]:
            # ok: MLS302
            state_dict[key] = state_dict[key][rank_idx]


def enable_checkpointing(gradient_checkpointing_kwargs, context_fn):
    # ok: MLS302
    gradient_checkpointing_kwargs["use_reentrant"] = False
    gradient_checkpointing_kwargs["context_fn"] = context_fn


class Guidance:
    def get_state(self):
        state = {}
        # ok: MLS304
        state["momentum_buffer"] = self.momentum_buffer
        return state


class DPOTrainerLike:
    def get_batch_logps(self, logits, labels, pad_id):
        loss_mask = labels != pad_id
        if self.is_encoder_decoder:
            # ok: MLS309
            labels[labels == pad_id] = 0
        return (logits * loss_mask).sum(-1)


class ImagePipeline(DiffusionPipeline):
    def __call__(self, prompt, image=None, seed=None):
        if seed is not None:
            # ok: MLS301
            torch.manual_seed(seed)
        return self.run(prompt, image)


async def retry(coro_factory, max_attempts=5):
    for attempt in range(max_attempts):
        try:
            return await coro_factory()
        except OSError:
            delay = min(2 ** min(attempt, 4), 16)
            # ok: MLS307
            await asyncio.sleep(delay)


def run_search(study, objective, cfg, data, n_trials):
    # ok: MLS301
    study.optimize(lambda t: objective(t, cfg, data), n_trials=n_trials)


def objective(trial, cfg, data):
    set_seed(cfg["seed"] + trial.number)
    return train_once(trial, data)


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
