# ruff: noqa
# Hold-out batch 400 (family-focused 5/6, chest X-ray multi-label classification). Measured once in session 16 (round 109): 7/31 (23%) at medium+.
"""Train a multi-label chest X-ray classifier.

Single GPU:   python train.py --root /data/cxr14 --labels /data/cxr14/Data_Entry_2017.csv
Multi GPU:    torchrun --nproc_per_node 4 train.py --root ... --labels ...
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from data import CLASSES, NUM_CLASSES, DataConfig, build_dataloaders
from metrics import calibrate_thresholds, gather_tensor, summarize
from model import ModelEMA, WeightedBCELoss, build_model, compute_pos_weight, load_checkpoint
from tracking import CheckpointManager, Tracker, setup_logging

logger = logging.getLogger("train")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--out", default="runs/cxr")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--arch", default="densenet121", choices=["densenet121", "resnet50"])
    p.add_argument("--no-pretrained", action="store_true")
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32, help="per GPU")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument("--label-noise", type=float, default=0.05,
                   help="symmetric label noise injected during training (robustness to NLP-mined labels)")
    p.add_argument("--ohem-frac", type=float, default=1.0)
    p.add_argument("--mixup", type=float, default=0.0)
    p.add_argument("--relabel-after", type=int, default=3,
                   help="epoch after which high-loss labels are corrected (bootstrapping)")
    p.add_argument("--relabel-frac", type=float, default=0.02)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--eval-test", action="store_true", default=True,
                   help="also track the test split every epoch for the learning-curve figure")
    p.add_argument("--threshold-method", default="youden", choices=["youden", "sens", "f1"])
    p.add_argument("--final-fit", action="store_true")
    p.add_argument("--resume", default=None)
    p.add_argument("--wandb", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()


def init_distributed() -> Tuple[int, int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank = int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl", init_method="env://")
        return rank, world, local
    return 0, 1, 0


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def build_optimizer(model: torch.nn.Module, args) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return torch.optim.AdamW([
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ], lr=args.lr)


def build_scheduler(opt, args, steps_per_epoch: int):
    warmup = int(args.warmup_epochs * steps_per_epoch)
    total = args.epochs * steps_per_epoch

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)


# The classification head is laid out in the export label-map order
# (alphabetical) so downstream consumers can index outputs by name.
HEAD_ORDER = torch.tensor(sorted(range(NUM_CLASSES), key=lambda i: CLASSES[i]))


def train_one_epoch(model, ema, loader, criterion, opt, sched, scaler, args, epoch, device, tracker):
    model.train()
    criterion.train()
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    running, n_seen, t0 = 0.0, 0, time.time()
    step = epoch * len(loader)
    for it, (images, targets, _) in enumerate(loader):
        images = images.to(device, non_blocking=True).to(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        targets = targets[:, HEAD_ORDER.to(device)]  # todoruleid: family 6 (missed)

        with torch.autocast("cuda", dtype=torch.float16, enabled=args.amp):
            logits = model(images)
            if args.relabel_after is not None and epoch >= args.relabel_after:
                with torch.no_grad():
                    probs = torch.sigmoid(logits.float())
                    per_term = F.binary_cross_entropy(probs, targets, reduction="none")
                    cut = torch.quantile(per_term.flatten(), 1.0 - args.relabel_frac)
                    hard = per_term > cut
                    targets = torch.where(hard, (probs > 0.5).float(), targets)  # todoruleid: family 6 (missed)
            loss = criterion(logits.float(), targets)

        if not torch.isfinite(loss):
            logger.warning("non-finite loss (%s) at epoch %d iter %d, skipping batch", loss.item(), epoch, it)
            opt.zero_grad(set_to_none=True)
            continue

        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if args.clip_grad > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        scaler.step(opt)
        scaler.update()
        sched.step()
        ema.update(model.module if isinstance(model, DDP) else model)

        running += loss.item() * images.size(0)
        n_seen += images.size(0)
        if it % 50 == 0:
            tracker.log({"train/loss": loss.item(), "train/lr": sched.get_last_lr()[0]}, step + it)
            logger.info("epoch %d iter %d/%d loss %.4f (%.1f img/s)", epoch, it, len(loader),
                        loss.item(), n_seen / max(1e-6, time.time() - t0))
    return running / max(1, n_seen)


@torch.no_grad()
def predict(model, loader, device, amp: bool) -> Tuple[np.ndarray, np.ndarray, float]:
    model.eval()
    all_logits, all_targets = [], []
    for images, targets, _ in loader:
        images = images.to(device, non_blocking=True).to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            logits = model(images)
        all_logits.append(logits.float())
        all_targets.append(targets.to(device))
    logits = torch.cat(all_logits)
    targets = torch.cat(all_targets)
    loss = F.binary_cross_entropy_with_logits(logits, targets).item()
    return targets.cpu().numpy(), torch.sigmoid(logits).cpu().numpy(), loss


def evaluate_split(model, loader, device, amp: bool, world: int) -> Dict[str, float]:
    labels, probs, loss = predict(model, loader, device, amp)
    local = summarize(labels, probs, CLASSES)
    if world > 1:
        keys = sorted(local)
        vec = torch.tensor([local[k] for k in keys] + [loss], device=device, dtype=torch.float64)
        dist.all_reduce(vec, op=dist.ReduceOp.MAX)  # ruleid: MLS306
        local = dict(zip(keys, vec[:-1].tolist()))
        loss = vec[-1].item()
    local["loss"] = loss
    return local


def main() -> None:
    args = parse_args()
    rank, world, local_rank = init_distributed()
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    setup_logging(rank, args.out)
    set_seed(args.seed + rank)

    cfg = DataConfig(root=args.root, label_csv=args.labels, image_size=args.image_size,
                     seed=args.seed, cache_dir=args.cache_dir, label_noise=args.label_noise,
                     final_fit=args.final_fit, mixup_alpha=args.mixup)
    loaders = build_dataloaders(cfg, args.batch_size, args.workers)
    train_targets = loaders["train"].dataset.targets.numpy()

    model = build_model(args, NUM_CLASSES).to(device).to(memory_format=torch.channels_last)
    ema = ModelEMA(model, decay=args.ema_decay)
    if world > 1:
        model = DDP(model, device_ids=[local_rank])
    criterion = WeightedBCELoss(compute_pos_weight(train_targets).to(device),
                                smoothing=args.label_smoothing, ohem_frac=args.ohem_frac).to(device)
    opt = build_optimizer(model, args)
    sched = build_scheduler(opt, args, len(loaders["train"]))
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)

    tracker = Tracker(args.out, rank, vars(args), use_wandb=args.wandb)
    monitor = "test/auroc_macro" if args.eval_test else "val/auroc_macro"  # ruleid: MLS306
    manager = CheckpointManager(args.out, monitor=monitor)

    start_epoch = 0
    if args.resume:
        ckpt = load_checkpoint(model.module if isinstance(model, DDP) else model, args.resume)
        if "optimizer" in ckpt:
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
        start_epoch = int(ckpt.get("epoch", -1)) + 1
        manager.load_state()
        logger.info("resumed from %s at epoch %d", args.resume, start_epoch)

    for epoch in range(start_epoch, args.epochs):
        train_loss = train_one_epoch(model, ema, loaders["train"], criterion, opt, sched, scaler,
                                     args, epoch, device, tracker)
        raw = evaluate_split(model, loaders["val"], device, args.amp, world)
        smoothed = evaluate_split(ema.module, loaders["val"], device, args.amp, world)
        val = max(raw, smoothed, key=lambda m: m["auroc_macro"])  # todoruleid: family 5 (missed)
        metrics = {"train/loss_epoch": train_loss}
        metrics.update({f"val/{k}": v for k, v in val.items()})
        if args.eval_test:
            test = evaluate_split(ema.module, loaders["test"], device, args.amp, world)
            metrics.update({f"test/{k}": v for k, v in test.items()})
        tracker.log(metrics, step=(epoch + 1) * len(loaders["train"]))
        logger.info("epoch %d: train loss %.4f | val loss %.4f | val AUROC %.4f", epoch, train_loss,
                    val["loss"], val["auroc_macro"])

        if rank == 0:
            state = {
                "model": (model.module if isinstance(model, DDP) else model).state_dict(),
                "ema": ema.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch,
                "classes": CLASSES,
                "args": vars(args),
            }
            manager.step(state, metrics, epoch)
        if world > 1:
            dist.barrier()

    # Calibrate per-class thresholds on the validation split with the best weights.
    best_path = Path(args.out) / "checkpoints" / "best.pt"
    if rank == 0 and best_path.exists():
        best_model = build_model(args, NUM_CLASSES).to(device).to(memory_format=torch.channels_last)
        ckpt = load_checkpoint(best_model, str(best_path))
        labels, probs, _ = predict(best_model, loaders["val"], device, args.amp)
        thresholds = calibrate_thresholds(labels, probs, method=args.threshold_method)  # ok: MLS306
        ckpt["thresholds"] = thresholds.tolist()
        ckpt["threshold_method"] = args.threshold_method
        torch.save(ckpt, best_path)
        with open(Path(args.out) / "thresholds.json", "w") as fh:
            json.dump(dict(zip(CLASSES, thresholds.tolist())), fh, indent=2)
        logger.info("saved validation thresholds to %s", best_path)

    tracker.finish()
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
