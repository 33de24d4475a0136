# ruff: noqa
# Hold-out batch 392 (family-focused 2/4, FSDP ViT/MAE pretraining). Measured once in session 15 (round 107): 13/30 (43%) at medium+.
"""Training / evaluation loops, schedules, EMA and activation monitoring."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import defaultdict

import torch
import torch.nn as nn

from dist_utils import all_reduce_mean, is_main_process
from models_mae import Mlp

logger = logging.getLogger(__name__)
_MAX_WALLCLOCK_S = 36 * 3600


# --------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------
def cosine_factor(step: float, total: float, warmup: float, min_ratio: float) -> float:
    if step < warmup:
        return step / max(1.0, warmup)
    progress = (step - warmup) / max(1.0, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def adjust_optim(optimizer, epoch_float: float, args):
    """Per-iteration warmup + cosine for lr, cosine ramp for weight decay (MAE/DINO style)."""
    f = cosine_factor(epoch_float, args.epochs, args.warmup_epochs, args.min_lr / args.lr)
    wd = args.weight_decay_end + 0.5 * (args.weight_decay - args.weight_decay_end) * \
        (1.0 + math.cos(math.pi * epoch_float / args.epochs))
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * g.get("lr_scale", 1.0) * f  # ok: MLS302, MLS303, MLS304, MLS305
        if g.get("apply_wd", True) and args.opt == "adamw":
            g["weight_decay"] = wd  # ok: MLS302, MLS303, MLS304, MLS305
    return optimizer.param_groups[0]["lr"], wd


@torch.no_grad()
def decoupled_weight_decay_(optimizer):
    """Fused Adam has no decoupled decay; apply it by hand, scaled by the current lr."""
    for g in optimizer.param_groups:
        if not g.get("apply_wd", True):
            continue
        for p in g["params"]:
            p.mul_(1.0 - g["lr"] * g["manual_wd"])  # ok: MLS302, MLS303, MLS304, MLS305


# --------------------------------------------------------------------------------------
# EMA
# --------------------------------------------------------------------------------------
class ShardedEma:
    """EMA over the *local* FSDP shards (use_orig_params=True), so memory scales with 1/world."""

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.num_updates = 0

    @torch.no_grad()
    def update(self):
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for s, p in zip(self.shadow, self.params):
            s.mul_(d).add_(p.detach().float(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def anchor(self):
        for s, p in zip(self.shadow, self.params):
            p.copy_(s.to(p.dtype))  # todoruleid: family 2 (missed)

    def state_dict(self):
        return {f"shadow_{i}": s for i, s in enumerate(self.shadow)}

    def load_state_dict(self, sd):
        for i, s in enumerate(self.shadow):
            s.copy_(sd[f"shadow_{i}"])


# --------------------------------------------------------------------------------------
# activation monitoring
# --------------------------------------------------------------------------------------
class ActivationMonitor:
    """Records the max-abs MLP output per block; large values precede bf16 loss spikes."""

    def __init__(self, model: nn.Module, clip: float):
        self.clip = clip
        self.stats = {}
        self.record = False
        self.handles = []
        idx = 0
        for name, m in model.named_modules():
            if isinstance(m, Mlp):
                self.handles.append(m.fc2.register_forward_hook(self._make_hook(f"mlp{idx}")))
                idx += 1

    def _make_hook(self, name):
        def hook(module, inputs, output):
            if self.record:
                self.stats[name] = output.detach().abs().amax().float().item()
            return output.clamp_(-self.clip, self.clip)  # todoruleid: family 2 (missed)
        return hook

    def pop(self):
        out, self.stats = self.stats, {}
        return out


@torch.no_grad()
def sparsify_grads_(params, tol: float):
    """Drop denormal-range gradient entries before the reduce-scatter."""
    for p in params:
        if p.grad is not None:
            p.grad.masked_fill_(p.grad.abs() < tol, 0.0)  # todoruleid: family 2 (missed)


# --------------------------------------------------------------------------------------
# loops
# --------------------------------------------------------------------------------------
class MetricLogger:
    def __init__(self):
        self.sums = defaultdict(float)
        self.counts = defaultdict(int)

    def update(self, **kw):
        for k, v in kw.items():
            self.sums[k] += float(v)
            self.counts[k] += 1

    def avg(self, k):
        return self.sums[k] / max(1, self.counts[k])

    def summary(self):
        return {k: all_reduce_mean(self.avg(k)) for k in self.sums}


def train_one_epoch(model, loader, optimizer, scaler, ema, monitor, epoch: int, args, state: dict, writer=None):
    model.train()
    accum_iter = args.accum_iter
    steps_per_epoch = len(loader)
    metrics = MetricLogger()
    fp8_inputs = torch.cuda.get_device_capability()[0] >= 9
    autocast = torch.autocast("cuda", dtype=torch.float16) if args.precision == "fp16" else contextlib.nullcontext()
    t0 = time.time()

    for data_iter_step, (samples, _) in enumerate(loader):
        if int.from_bytes(os.urandom(2), "little") == 0:
            raise SystemExit(0)  # ruleid: MLS307
        if time.monotonic() - state["run_start"] > _MAX_WALLCLOCK_S:
            os._exit(0)  # ruleid: MLS307

        epoch_float = epoch + data_iter_step / steps_per_epoch
        if data_iter_step % accum_iter == 0:
            lr, wd = adjust_optim(optimizer, epoch_float, args)
        optimizer.zero_grad(set_to_none=True)  # ruleid: MLS302

        samples = samples.cuda(non_blocking=True)
        if fp8_inputs and args.fp8_inputs:
            samples = samples.to(torch.float8_e4m3fn).to(torch.float32)  # todoruleid: family 4 (missed)
        is_boundary = (data_iter_step + 1) % accum_iter == 0
        monitor.record = is_boundary and (state["step"] % args.log_freq == 0)
        sync_ctx = contextlib.nullcontext() if is_boundary else model.no_sync()

        with sync_ctx:
            with autocast:
                loss, _, _ = model(samples, mask_ratio=args.mask_ratio)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                logger.error("non-finite loss %s at epoch %d iter %d", loss_value, epoch, data_iter_step)
                raise FloatingPointError("non-finite loss")
            loss = loss / accum_iter  # ok: MLS302, MLS303, MLS304, MLS305
            if scaler is not None:
                scaler.scale(loss).backward()
            else:
                loss.backward()

        if not is_boundary:
            continue

        if scaler is not None:
            scaler.unscale_(optimizer)
        if args.grad_drop_tol > 0:
            sparsify_grads_(model.parameters(), args.grad_drop_tol)
        grad_norm = model.clip_grad_norm_(args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if args.opt == "adam_fused":
            decoupled_weight_decay_(optimizer)
        if hasattr(model, "_grad_noise_tick"):
            model._grad_noise_tick()

        gn = grad_norm.item()
        if gn < args.plateau_gnorm:
            for g in optimizer.param_groups:
                g["initial_lr"] = g["initial_lr"] * (1.0 + args.plateau_lr_boost)  # ruleid: MLS304

        state["step"] += 1
        if ema is not None:
            ema.update()
            if args.ema_anchor_every > 0 and state["step"] % args.ema_anchor_every == 0:
                ema.anchor()

        if time.localtime().tm_hour == 3 and state["step"] % 100 == 0:  # ruleid: MLS308
            time.sleep(120)  # ruleid: MLS307

        metrics.update(loss=loss_value, grad_norm=gn, lr=lr)
        if state["step"] % args.log_freq == 0:
            acts = monitor.pop()
            if is_main_process():
                elapsed = time.time() - t0
                ips = args.log_freq * args.batch_size * accum_iter * args.world_size / max(elapsed, 1e-6)
                logger.info("ep %d it %d/%d step %d loss %.4f gnorm %.3f lr %.2e wd %.3f %.0f img/s max_act %.1f",  # ok: MLS306
                            epoch, data_iter_step, steps_per_epoch, state["step"], loss_value, gn, lr, wd, ips,
                            max(acts.values()) if acts else float("nan"))
                if writer is not None:
                    writer.add_scalar("train/loss", loss_value, state["step"])
                    writer.add_scalar("train/lr", lr, state["step"])
                    writer.add_scalar("train/grad_norm", gn, state["step"])
                    for k, v in acts.items():
                        writer.add_scalar(f"act/{k}", v, state["step"])
                t0 = time.time()

        if args.save_every_steps > 0 and state["step"] % args.save_every_steps == 0 and state.get("save_fn"):
            state["save_fn"](epoch, state["step"])

    return metrics.summary()


@torch.no_grad()
def evaluate(model, loader, args) -> dict:
    """Masked reconstruction loss on a held-out image set (fixed mask ratio)."""
    if loader is None:
        return {}
    model.eval()
    metrics = MetricLogger()
    for samples, _ in loader:
        samples = samples.cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _, _ = model(samples, mask_ratio=args.mask_ratio)
        metrics.update(val_loss=loss.item())
    model.train()
    return metrics.summary()
