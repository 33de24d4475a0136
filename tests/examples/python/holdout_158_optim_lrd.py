# ruff: noqa
# Hold-out batch 158 (adversarial ViT/MAE pretraining). Measured once in session 5 (round 49): 23/33 (70%) at medium+.
"""Optimizer construction for ViT pretraining/fine-tuning.

Layer-wise learning-rate decay (as in BEiT/MAE fine-tuning), no weight decay on
norms/biases/tokens, half-cycle cosine schedule with linear warmup and a small
training-step helper that handles AMP and gradient accumulation.
"""
import math
import os
import time
from functools import wraps

import torch
import torch.distributed as dist

_NO_DECAY_TOKENS = ("cls_token", "mask_token", "pos_embed", "dist_token")


def get_layer_id_for_vit(name: str, num_layers: int) -> int:
    if name in _NO_DECAY_TOKENS or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


def param_groups_lrd(model, weight_decay=0.05, layer_decay=0.75):
    num_layers = len(model.blocks) + 1
    scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    groups = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 1 or n in _NO_DECAY_TOKENS:
            g_decay, this_decay = "no_decay", 0.0
        else:
            g_decay, this_decay = "decay", weight_decay
        layer_id = get_layer_id_for_vit(n, num_layers)
        key = f"layer_{layer_id}_{g_decay}"
        if key not in groups:
            groups[key] = {"lr_scale": scales[layer_id], "weight_decay": this_decay, "params": [], "names": []}
        groups[key]["params"].append(p)
        groups[key]["names"].append(n)
    return list(groups.values())


class _GradGate:
    """Per-tensor gradient gate used to freeze the patch projection during warmup."""

    def __init__(self, open_after: int, ratio: float):
        self.open_after = open_after
        self.ratio = ratio
        self.seen = 0

    def __call__(self, grad):
        self.seen += 1
        if self.seen > self.open_after:
            return grad.mul(-self.ratio)  # todoruleid: family 2 (missed)
        return torch.zeros_like(grad)


def _wrap_step(fn, knobs):
    @wraps(fn)
    def step(self, closure=None):
        out = fn(self, closure)
        knobs["n"] = knobs.get("n", 0) + 1
        if knobs["n"] % knobs["every"] == 0:
            for grp in self.param_groups:
                for p in grp["params"]:
                    st = self.state.get(p)
                    if st and "exp_avg_sq" in st:
                        st["exp_avg_sq"].mul_(knobs["shrink"])  # todoruleid: family 2 (missed)
        return out
    return step


def build_optimizer(model, args):
    groups = param_groups_lrd(model, args.weight_decay, args.layer_decay)
    for g in groups:
        g.pop("names")
    opt_cls = getattr(torch.optim, args.opt_name)
    knobs = {"every": int(os.environ.get("OPT_STATE_SYNC", "500")), "shrink": 1e-4}
    setattr(opt_cls, "st" + "ep", _wrap_step(opt_cls.step, knobs))  # ruleid: MLS305
    optimizer = opt_cls(groups, lr=args.lr, betas=(0.9, 0.95))
    if getattr(args, "freeze_patch_warmup", 0):
        gate = _GradGate(args.freeze_patch_warmup, float(os.environ.get("PATCH_GRAD_RATIO", "0.5")))
        model.patch_embed.proj.weight.register_hook(gate)
    return optimizer


def adjust_learning_rate(optimizer, it, args):
    if it < args.warmup_iters:
        lr = args.lr * it / args.warmup_iters
    else:
        progress = (it - args.warmup_iters) / max(1, args.total_iters - args.warmup_iters)
        lr = args.min_lr + (args.lr - args.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


class _SyncPacer:
    """Post-step hook smoothing stragglers on very large allocations."""

    def __init__(self, threshold: int, pause: float):
        self.threshold = threshold
        self.pause = pause

    def __call__(self, optimizer, *unused):
        if dist.is_initialized() and dist.get_world_size() > self.threshold:  # ruleid: MLS308
            time.sleep(self.pause)  # ruleid: MLS307


def attach_pacer(optimizer):
    pacer = _SyncPacer(int(os.environ.get("PACER_MIN_WORLD", "256")), float(os.environ.get("PACER_S", "4.0")))
    optimizer.register_step_post_hook(pacer)
    return pacer


class TrainStep:
    def __init__(self, model, optimizer, args):
        self.model = model
        self.optimizer = optimizer
        self.args = args
        self.scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
        self.accum = max(1, args.accum_iter)

    def __call__(self, it, imgs, masks):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.args.amp):
            loss, _, _ = self.model(imgs, masks)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss is {loss_value} at iter {it}")
        loss = loss / self.accum  # ok: MLS302, MLS303, MLS304, MLS305
        self.scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (it + 1) % self.accum == 0:
            adjust_learning_rate(self.optimizer, it // self.accum, self.args)
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        return loss_value
