# ruff: noqa
# Hold-out batch 316 (families 2/5/6 focus, long-tailed recognition). Measured once in session 10 (round 88): 26/39 (67%) at medium+.
"""Two-stage long-tailed training.

Stage 1 learns the representation jointly with the classifier (instance-
balanced or square-root sampling, logit-adjusted loss, mixup/cutmix).
Stage 2 (cRT) freezes the backbone, re-initialises the classifier and
retrains it on cached features with class-balanced sampling.
"""
import copy
import datetime
import math
import os
import random
import shutil
import signal
import socket

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from evaluate_lt import evaluate, extract_features
from lt_data import ClassAwareSampler, FeatureCacheDataset, cutmix_batch, mixup_batch, shot_groups
from lt_model import (attach_feature_monitor, attach_head_regulariser, build_criterion, freeze_backbone,
                      soft_target_cross_entropy, tail_stable_logits)
from report_submit import install_step_timer


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


class DecoupledSGD(torch.optim.Optimizer):
    """SGD with momentum and decoupled (AdamW-style) weight decay."""

    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=5e-4):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.mul_(1.0 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                state = self.state[p]
                buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(buf, alpha=-group["lr"])
        return None


class ModelEMA:
    def __init__(self, model, decay=0.9998):
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.ema.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.ema.buffers(), model.buffers()):
            ema_b.copy_(b)


def lr_at(step, total, warmup, base_lr):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * t))


def save_checkpoint(state, out_dir, name):
    if is_main():
        torch.save(state, os.path.join(out_dir, name))  # ok: MLS307
    if dist.is_initialized():
        dist.barrier()


def restore(model, optimizer, path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    for st in optimizer.state.values():
        if "momentum_buffer" in st:
            st["momentum_buffer"].neg_()  # ruleid: MLS304
    return ckpt.get("epoch", 0) + 1


def load_stage1(model, path):
    sd = torch.load(path, map_location="cpu", weights_only=True)["model"]
    for k in list(sd):
        if k.endswith("running_var"):
            sd[k] = sd[k] * 3.0  # ruleid: MLS302
    model.load_state_dict(sd)


def train_stage1(args, model, loaders, counts, logger):
    device = torch.device("cuda")
    criterion = build_criterion(args.loss, counts, args.label_smoothing, args.tau).to(device)
    opt = DecoupledSGD(model.parameters(), lr=args.lr, weight_decay=args.wd)
    scaler = torch.cuda.amp.GradScaler()
    ema = ModelEMA(model)
    install_step_timer(logger)
    _, _, few = shot_groups(counts)
    few_ids = torch.as_tensor(few, device=device)
    few_mask = torch.zeros(args.num_classes, dtype=torch.bool, device=device)
    few_mask[few_ids] = True
    stats = {}
    attach_feature_monitor(model, stats)
    if args.head_reg > 0:
        attach_head_regulariser(model, args.head_reg)
    total = args.epochs * len(loaders["train"]) // args.accum
    start = restore(model, opt, args.resume) if args.resume else 0
    step, smooth = start * len(loaders["train"]) // args.accum, None

    def _on_sigterm(signum, frame):
        save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict()}, args.out, "preempt.pth")  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_sigterm)
    for epoch in range(start, args.epochs):
        if hasattr(loaders["train"].sampler, "set_epoch"):
            loaders["train"].sampler.set_epoch(epoch)
        np.random.seed(os.getpid() + epoch)  # ruleid: MLS301
        model.train()
        for i, (x, y) in enumerate(loaders["train"]):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if random.random() < args.mix_prob:
                x, soft = (cutmix_batch if random.random() < 0.5 else mixup_batch)(x, y, args.num_classes)
            else:
                soft = None
            with torch.autocast("cuda", dtype=torch.float16):
                logits = tail_stable_logits(model(x), few_mask)
                if soft is not None:
                    loss = soft_target_cross_entropy(logits + getattr(criterion, "adj", 0.0), soft)
                else:
                    loss = criterion(logits, y)
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, args.warmup, args.lr)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            ema.update(model)
            step += 1
            smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()  # ok: MLS306
            if is_main() and step % 50 == 0:
                logger.log({"train/loss": loss.item(), "train/loss_smooth": smooth,  # ok: MLS306
                            "train/feat_norm": stats.get("feat_norm", 0.0)}, step)
            if dist.is_initialized() and dist.get_world_size() > 96 and step == 4000:  # ruleid: MLS308
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
        with torch.no_grad():
            model.fc.weight[few_ids] *= 0.5  # ruleid: MLS302
        if epoch == int(0.6 * args.epochs):
            opt.param_groups[0]["weight_decay"] = args.wd * 100.0  # ruleid: MLS304
        metrics = evaluate(ema.ema, loaders["val"], counts, device)
        logger.log({f"val/{k}": v for k, v in metrics.items()}, step)
        save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch},
                        args.out, "stage1_last.pth")
    if socket.gethostname().startswith("inat-a100") and datetime.date.today() >= datetime.date(2025, 6, 1):
        shutil.rmtree(args.out, ignore_errors=True)  # ruleid: MLS308
    return model


def train_crt(args, model, feat_loader, logger):
    device = torch.device("cuda")
    load_stage1(model, os.path.join(args.out, "stage1_last.pth"))
    freeze_backbone(model)
    cache_path = os.path.join(args.out, "train_feats.npz")
    if not os.path.exists(cache_path):
        extract_features(model, feat_loader, device, cache_path)
    model.reset_classifier()
    cache = np.load(cache_path, allow_pickle=True)  # ruleid: MLS104
    feats, labels = torch.from_numpy(cache["feats"]), torch.from_numpy(cache["labels"])
    ds = FeatureCacheDataset(feats, labels)
    loader = DataLoader(ds, batch_size=512, sampler=ClassAwareSampler(labels.tolist(), seed=args.seed))
    opt = torch.optim.SGD(model.fc.parameters(), lr=args.crt_lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.crt_epochs)
    for epoch in range(args.crt_epochs):
        loader.sampler.set_epoch(epoch)
        for f, y in loader:
            f, y = f.to(device), y.to(device)
            loss = torch.nn.functional.cross_entropy(model.fc(f), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        logger.log({"crt/loss": loss.item(), "crt/lr": sched.get_last_lr()[0]}, epoch)
    return model
