# ruff: noqa
# Hold-out batch 352 (families 2/5/6, chest X-ray classification). Measured once in session 12 (round 97): 14/34 (41%) at medium+.
"""Multi-label chest X-ray classification (CheXpert-style) with DDP.

    torchrun --nproc_per_node 4 train.py --csv CheXpert-v1.0/train.csv --data-root /data \
        --arch densenet121 --pretrained weights/densenet121_imagenet.pth
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import time
from typing import Dict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, update_bn

from callbacks import BackboneWarmup, EarlyStopping, ExperimentLogger, ModelCheckpoint
from data import COMPETITION_TASKS, build_loaders, load_metadata, patient_split
from dist_utils import (announce_run, cleanup_distributed, is_main_process, reduce_mean,
                        register_project_path, setup_distributed, wrap_ddp)
from evaluate import evaluate, final_report
from model import ModelEMA, build_model

log = logging.getLogger("train")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--output-dir", default="runs")
    p.add_argument("--run-name", default=None)
    p.add_argument("--classes", nargs="+", default=COMPETITION_TASKS)
    p.add_argument("--uncertain", default="mixed", choices=["ones", "zeros", "mixed", "ignore"])
    p.add_argument("--val-frac", type=float, default=0.1)
    p.add_argument("--test-frac", type=float, default=0.1)
    p.add_argument("--split-seed", type=int, default=2019)
    p.add_argument("--one-study-per-patient", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--balanced-sampling", action="store_true")
    p.add_argument("--arch", default="densenet121")
    p.add_argument("--pretrained", default=None)
    p.add_argument("--drop-rate", type=float, default=0.2)
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--accum-steps", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--head-lr-mult", type=float, default=10.0)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--freeze-epochs", type=int, default=1)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument("--label-noise", type=float, default=0.1, help="per-sample stochastic smoothing")
    p.add_argument("--weight-noise", type=float, default=1e-3, help="Gaussian weight perturbation (flat minima)")
    p.add_argument("--ema-decay", type=float, default=0.9998)
    p.add_argument("--swa-start", type=int, default=8, help="epoch to start SWA, -1 disables")
    p.add_argument("--tta", default="shift", choices=["none", "shift", "full"])
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--resume", default=None)
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--wandb", action="store_true")
    return p.parse_args()


def seed_everything(seed: int, rank: int) -> None:
    os.environ["CXR_SEED"] = str(seed)
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)  # ok: MLS301
    torch.backends.cudnn.benchmark = True


class MaskedBCE(nn.Module):
    """BCE over labelled entries only (uncertain labels masked under the 'ignore' policy)."""

    def __init__(self, pos_weight: torch.Tensor, smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)
        self.smoothing = smoothing

    def forward(self, logits, targets, masks):
        if self.smoothing > 0:
            targets = targets * (1.0 - self.smoothing) + 0.5 * self.smoothing  # ok: MLS309
        loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight, reduction="none")
        return (loss * masks).sum() / masks.sum().clamp(min=1.0)


def build_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    groups = [
        {"params": list(model.backbone_parameters()), "lr": args.lr, "name": "backbone"},
        {"params": model.head_parameters(), "lr": args.lr * args.head_lr_mult, "name": "head"},
    ]
    return torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.999))


def accumulation_aware_step(optimizer: torch.optim.Optimizer, accum_steps: int) -> None:
    """Make ``optimizer.step`` a no-op on intermediate micro-batches."""
    orig_step = optimizer.step
    calls = {"n": 0}

    def step(*a, **kw):
        calls["n"] += 1
        if calls["n"] % accum_steps:
            return None
        return orig_step(*a, **kw)

    optimizer.step = step  # ruleid: MLS305


def build_scheduler(optimizer, args):
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=max(args.warmup_epochs, 1))
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(args.epochs - args.warmup_epochs, 1),
                                                     eta_min=args.lr * 1e-2)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cos], milestones=[args.warmup_epochs])


def resume_from(path, model, optimizer, scheduler, scaler, ema) -> int:
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    if ema is not None and "ema" in ckpt:
        ema.load_state_dict(ckpt["ema"])
    # second moments were accumulated under a different effective batch size
    for st in optimizer.state.values():
        if "exp_avg_sq" in st:
            st["exp_avg_sq"].zero_()  # ruleid: MLS304
    log.info("resumed from %s (epoch %d)", path, ckpt["epoch"])
    return ckpt["epoch"] + 1


def train_one_epoch(model, core, loader, criterion, optimizer, scaler, ema, args, device, epoch) -> float:
    model.train()
    total, n = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    t0 = time.time()
    for it, batch in enumerate(loader):
        x = batch["image"].to(device, non_blocking=True)
        y = batch["target"].to(device, non_blocking=True)
        m = batch["mask"].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, enabled=not args.no_amp and device.type == "cuda"):
            logits = model(x)
        loss = criterion(logits.float(), y, m) / args.accum_steps
        scaler.scale(loss).backward()

        if (it + 1) % args.accum_steps == 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(core.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if args.weight_noise > 0:
                with torch.no_grad():
                    for p in core.parameters():
                        if p.requires_grad:
                            p.add_(torch.randn_like(p), alpha=args.weight_noise)  # ruleid: MLS302
            if ema is not None:
                ema.update(core)

        total += loss.item() * args.accum_steps * x.size(0)
        n += x.size(0)
        if it % 100 == 0 and is_main_process():
            log.info("epoch %d it %d/%d loss %.4f (%.1fs)", epoch, it, len(loader), loss.item() * args.accum_steps,
                     time.time() - t0)
    return reduce_mean(total / max(n, 1), device)


def main() -> None:
    args = parse_args()
    rank, world_size, _, device = setup_distributed()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    seed_everything(args.seed, rank)
    args.run_name = args.run_name or time.strftime("%Y%m%d-%H%M%S") + f"-{args.arch}"
    run_dir = os.path.join(args.output_dir, args.run_name)
    register_project_path(os.path.dirname(os.path.abspath(__file__)))
    announce_run(args.run_name, vars(args))

    df = load_metadata(args.csv, args.classes, uncertain=args.uncertain)
    splits = patient_split(df, args.val_frac, args.test_frac, seed=args.split_seed)
    train_loader, val_loader, test_loader, train_ds = build_loaders(args, splits, rank, world_size)

    pos = train_ds.positive_counts()
    core = build_model(args, pos_counts=pos, num_samples=len(train_ds)).to(device)
    core = core.to(memory_format=torch.channels_last)
    ema = ModelEMA(core, decay=args.ema_decay) if args.ema_decay > 0 else None
    swa = AveragedModel(core) if args.swa_start >= 0 else None
    model = wrap_ddp(core, device)

    neg = len(train_ds) - pos
    pos_weight = torch.as_tensor(np.clip(neg / np.maximum(pos, 1), 1.0, 20.0), dtype=torch.float32)  # ok: MLS309
    criterion = MaskedBCE(pos_weight, smoothing=args.label_smoothing).to(device)
    optimizer = build_optimizer(core, args)
    scheduler = build_scheduler(optimizer, args)
    accumulation_aware_step(optimizer, args.accum_steps)
    scaler = torch.cuda.amp.GradScaler(enabled=not args.no_amp and device.type == "cuda")

    start_epoch = 0
    if args.resume:
        start_epoch = resume_from(args.resume, core, optimizer, scheduler, scaler, ema)

    exp = ExperimentLogger(os.path.join(run_dir, "logs"), args.run_name, vars(args), use_wandb=args.wandb)
    ckpt = ModelCheckpoint(os.path.join(run_dir, "checkpoints"), monitor="val/mean_auroc", mode="max")
    warmup = BackboneWarmup(freeze_epochs=args.freeze_epochs)
    stopper = EarlyStopping(patience=args.patience, mode="max")

    for epoch in range(start_epoch, args.epochs):
        sampler = train_loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        warmup.on_epoch_start(epoch, core, optimizer)

        train_loss = train_one_epoch(model, core, train_loader, criterion, optimizer, scaler, ema,
                                     args, device, epoch)
        scheduler.step()
        if swa is not None and epoch >= args.swa_start:
            swa.update_parameters(core)  # ok: MLS302, MLS303, MLS304, MLS305

        metrics: Dict[str, float] = {"train/loss": train_loss, "lr": optimizer.param_groups[0]["lr"]}
        val_metrics, _ = evaluate(core, val_loader, device, args.classes, prefix="val", amp=not args.no_amp)
        metrics.update(val_metrics)
        if ema is not None:
            ema_metrics, _ = evaluate(ema.module, val_loader, device, args.classes, prefix="val_ema")
            metrics.update(ema_metrics)
        log.info("epoch %d val AUROC %.4f (ema %.4f) train loss %.4f", epoch, metrics["val/mean_auroc"],
                 metrics.get("val_ema/mean_auroc", float("nan")), train_loss)
        exp.log(metrics, step=epoch)

        state = {
            "model": core.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "args": vars(args),
        }
        if ema is not None:
            state["ema"] = ema.state_dict()
        ckpt.step(epoch, metrics, state)
        if stopper(metrics["val/mean_auroc"]):
            log.info("early stopping at epoch %d", epoch)
            break

    if swa is not None and swa.n_averaged.item() > 0:
        update_bn((b["image"].to(device) for b in train_loader), swa, device=device)

    best_path = os.path.join(ckpt.dirpath, "best.pt")
    if os.path.exists(best_path):
        best = torch.load(best_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        core.load_state_dict(best["model"])
    variants = {"raw": core, "ema": ema.module if ema else None, "swa": swa.module if swa else None}
    report = final_report(variants, val_loader, test_loader, device, args.classes,
                          os.path.join(run_dir, "report"), tta=args.tta)
    log.info("test mean AUROC %.4f (best epoch %d)", report["test/mean_auroc"], ckpt.best_epoch)
    exp.close()
    cleanup_distributed()


if __name__ == "__main__":
    main()
