# ruff: noqa
# Hold-out batch 388 (family-focused 5/6, medical imaging). Measured once in session 15 (round 106): 5/31 (16%) at medium+.
#!/usr/bin/env python
"""Train a chest X-ray classifier or a thoracic CT segmentation network.

    torchrun --nproc_per_node=4 train.py --task cxr --root /data/chexpert --out runs/cxr_dn121
    torchrun --nproc_per_node=8 train.py --task ctseg --root /data/lungct --out runs/unet3d \
        --batch-size 2 --epochs 300 --val-every 10
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import time
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

import data as D
from metrics import DiceAccumulator, macro_auroc, per_class_auroc
from transforms import build_ct_seg_transforms, build_cxr_transforms
from utils import (EpochSummaryFilter, Tracker, gather_tensor, get_world_size, is_main_process,
                   reduce_mean, reduce_metric_dict, setup_logging)

logger = logging.getLogger("thorax")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["cxr", "ctseg"], default="cxr")
    p.add_argument("--root", required=True)
    p.add_argument("--csv", default="train.csv")
    p.add_argument("--datalist", default="datalist.json")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument("--label-noise", type=float, default=0.1,
                   help="DisturbLabel-style regulariser; fraction of targets resampled per step")
    p.add_argument("--mixup-alpha", type=float, default=0.4)
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--patch-size", type=int, nargs=3, default=(96, 96, 96))
    p.add_argument("--num-workers", type=int, default=8)
    p.add_argument("--val-every", type=int, default=1)
    p.add_argument("--pretrained", default=None)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--resume", default=None)
    p.add_argument("--no-wandb", action="store_true")
    return p.parse_args()


def init_distributed() -> Tuple[int, int, torch.device]:
    cuda = torch.cuda.is_available()
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if cuda else "cpu")
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), torch.device("cuda", local_rank) if cuda else torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    ds = info.dataset.dataset if isinstance(info.dataset, Subset) else info.dataset
    tf = getattr(ds, "transform", None)
    if tf is not None and hasattr(tf, "set_random_state"):
        tf.set_random_state(info.seed % (2 ** 31 - 64))


def build_loaders(args: argparse.Namespace) -> Tuple[Dict[str, DataLoader], Dict]:
    dcfg = D.DataConfig(task=args.task, root=args.root, csv=args.csv, datalist=args.datalist,
                        cache_dir=args.cache_dir, seed=args.seed)
    meta: Dict = {}
    if args.task == "cxr":
        df = D.load_cxr_frame(dcfg)
        labels = D.labels_from_frame(df, dcfg.findings, dcfg.uncertain_policy)
        tr, va, te = D.patient_level_split(df["patient_key"].to_numpy(), dcfg.val_frac, dcfg.test_frac, dcfg.seed)
        tcfg = {"image_size": args.image_size}

        def cxr_ds(ix: np.ndarray, train: bool = False) -> D.CXRDataset:
            return D.CXRDataset(df.iloc[ix].reset_index(drop=True), labels[ix], args.root,
                                build_cxr_transforms(tcfg, train=train), train=train,
                                normal_repeat=dcfg.normal_repeat)

        train_ds, val_ds, train_eval_ds = cxr_ds(tr, train=True), cxr_ds(va), cxr_ds(tr)
        collate = D.cxr_collate
        meta.update(num_classes=len(dcfg.findings), class_names=dcfg.findings)
    else:
        records = D.load_ct_datalist(dcfg)
        groups = np.array([r["patient_id"] for r in records])
        tr, va, te = D.patient_level_split(groups, dcfg.val_frac, dcfg.test_frac, dcfg.seed)
        tcfg = {"patch_size": args.patch_size, "hu_window": "auto", "resample_to": (160, 256, 256)}
        cache = D.VolumeCache(args.cache_dir)
        subset = lambda ix, aug: D.CTSegDataset([records[i] for i in ix], build_ct_seg_transforms(tcfg, aug), cache)
        train_ds, val_ds, train_eval_ds = subset(tr, True), subset(va, False), subset(tr, False)
        collate = D.seg_collate
        meta.update(num_classes=len(D.TARGET_SEG_CLASSES), class_names=D.TARGET_SEG_CLASSES)

    # Small fixed subset of the training split, evaluated without augmentation,
    # to track the train/val gap.
    rng = np.random.RandomState(args.seed)
    sub = rng.choice(len(train_eval_ds), size=min(len(val_ds), len(train_eval_ds)), replace=False)
    train_eval_ds = Subset(train_eval_ds, sub.tolist())

    distributed = get_world_size() > 1
    if args.task == "cxr" and not distributed:
        train_sampler = D.make_balanced_sampler(train_ds.labels(), seed=args.seed)
    else:
        train_sampler = DistributedSampler(train_ds, shuffle=True, seed=args.seed) if distributed else None
    val_sampler = DistributedSampler(val_ds, shuffle=False) if distributed else None
    te_sampler = DistributedSampler(train_eval_ds, shuffle=False) if distributed else None
    bs_eval = args.batch_size if args.task == "cxr" else 1
    common = dict(num_workers=args.num_workers, pin_memory=True, collate_fn=collate,
                  worker_init_fn=worker_init, persistent_workers=args.num_workers > 0)
    loaders = {
        "train": DataLoader(train_ds, batch_size=args.batch_size, sampler=train_sampler,
                            shuffle=train_sampler is None, drop_last=True, **common),
        "val": DataLoader(val_ds, batch_size=bs_eval, sampler=val_sampler, shuffle=False, **common),
        "train_eval": DataLoader(train_eval_ds, batch_size=bs_eval, sampler=te_sampler, shuffle=False, **common),
    }
    meta["test_indices"] = te.tolist()
    return loaders, meta


# --------------------------------------------------------------------------- #
# Model
# --------------------------------------------------------------------------- #
def build_model(task: str, num_classes: int, pretrained: Optional[str] = None) -> nn.Module:
    if task == "cxr":
        from torchvision.models import densenet121

        net = densenet121(weights=None)
        if pretrained:
            net.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=True), strict=False)
        conv0 = net.features.conv0
        net.features.conv0 = nn.Conv2d(1, conv0.out_channels, 7, stride=2, padding=3, bias=False)
        with torch.no_grad():
            net.features.conv0.weight.copy_(conv0.weight.sum(dim=1, keepdim=True))
        net.classifier = nn.Linear(net.classifier.in_features, num_classes)
        return net
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=num_classes, channels=(32, 64, 128, 256, 320),
                strides=(2, 2, 2, 2), num_res_units=2, norm="instance")


# --------------------------------------------------------------------------- #
# Loss / regularisation
# --------------------------------------------------------------------------- #
def smooth_targets(y: torch.Tensor, eps: float) -> torch.Tensor:
    return y * (1.0 - eps) + 0.5 * eps  # ok: MLS309


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float) -> Tuple[torch.Tensor, torch.Tensor]:
    if alpha <= 0:
        return x, y
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    x_mix = lam * x + (1.0 - lam) * x[perm]
    y_mix = (1.0 - lam) * y + lam * y[perm]  # ruleid: MLS309
    return x_mix, y_mix


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / max(warmup, 1)
    prog = (step - warmup) / max(total - warmup, 1)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(prog, 1.0)))


# --------------------------------------------------------------------------- #
# Evaluation
# --------------------------------------------------------------------------- #
@torch.no_grad()
def evaluate_cxr(model: nn.Module, loader: DataLoader, device: torch.device,
                 names) -> Tuple[Dict[str, float], np.ndarray, np.ndarray]:
    model.eval()
    ys, ps, losses = [], [], []
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device, non_blocking=True)
        logits = model(x)
        losses.append(F.binary_cross_entropy_with_logits(logits, y).item())
        ys.append(y)
        ps.append(torch.sigmoid(logits))
    y_all = gather_tensor(torch.cat(ys)).cpu().numpy()
    p_all = gather_tensor(torch.cat(ps)).cpu().numpy()
    loss = reduce_mean(torch.tensor(float(np.mean(losses)), device=device)).item()
    per = per_class_auroc(y_all, p_all, names)
    out = {"loss": loss, "auroc": macro_auroc(per)}
    out.update({f"auroc_{k.replace(' ', '_').lower()}": v for k, v in per.items()})
    return out, y_all, p_all


@torch.no_grad()
def evaluate_seg(model: nn.Module, loader: DataLoader, device: torch.device, names,
                 roi, amp: bool) -> Dict[str, float]:
    from monai.inferers import sliding_window_inference

    model.eval()
    acc = DiceAccumulator(len(names), names)
    for batch in loader:
        x = batch["image"].to(device)
        with torch.autocast(device_type=device.type, enabled=amp):
            logits = sliding_window_inference(x, roi, 4, model, overlap=0.5)
        pred = logits.argmax(1)
        for i, cid in enumerate(batch["case_id"]):
            acc.update(pred[i], batch["label"][i, 0].to(device), cid)
    return reduce_metric_dict(acc.aggregate(), device)


def save_checkpoint(path: str, model: nn.Module, opt, scaler, epoch: int, step: int,
                    best_score: float, args: argparse.Namespace) -> None:
    core = model.module if isinstance(model, DDP) else model
    state = {"model": core.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
             "epoch": epoch, "step": step, "best_score": best_score, "args": vars(args)}
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def main() -> None:
    args = parse_args()
    rank, world, device = init_distributed()
    os.makedirs(args.out, exist_ok=True)
    setup_logging(args.out, rank)
    logger.addFilter(EpochSummaryFilter())
    seed_everything(args.seed + rank)

    loaders, meta = build_loaders(args)
    names = meta["class_names"]
    num_classes = meta["num_classes"]
    model = build_model(args.task, num_classes, args.pretrained).to(device)
    if args.task == "ctseg":
        from monai.losses import DiceCELoss

        seg_criterion = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    if world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    decay, no_decay = [], []
    for n, p_ in model.named_parameters():
        (no_decay if p_.ndim <= 1 or n.endswith(".bias") else decay).append(p_)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)

    steps_per_epoch = len(loaders["train"]) // args.accum
    total_steps = steps_per_epoch * args.epochs
    warmup = int(args.warmup_epochs * steps_per_epoch)
    start_epoch, step, best_score = 0, 0, -float("inf")
    if args.resume:
        ck = torch.load(args.resume, map_location="cpu", weights_only=True)
        (model.module if isinstance(model, DDP) else model).load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        start_epoch, step, best_score = ck["epoch"] + 1, ck["step"], ck["best_score"]

    tracker = Tracker(args.out, {**vars(args), "world_size": world}, use_wandb=not args.no_wandb)
    last_path = os.path.join(args.out, "last.pt")
    best_path = os.path.join(args.out, "best.pt")

    for epoch in range(start_epoch, args.epochs):
        model.train()
        sampler = loaders["train"].sampler
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        t_epoch = time.time()
        opt.zero_grad(set_to_none=True)
        for it, batch in enumerate(loaders["train"]):
            x = batch["image"].to(device, non_blocking=True)
            y = batch["label"].to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, enabled=args.amp):
                if args.task == "cxr":
                    if args.label_noise > 0:
                        flip = torch.rand_like(y) < args.label_noise
                        y = torch.where(flip, 1.0 - y, y)  # ruleid: MLS309
                    x, y = mixup(x, y, args.mixup_alpha)
                    logits = model(x)
                    loss = F.binary_cross_entropy_with_logits(logits, smooth_targets(y, args.label_smoothing))
                else:
                    loss = seg_criterion(model(x), y)
            scaler.scale(loss / args.accum).backward()
            if (it + 1) % args.accum != 0:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total_steps, warmup, args.lr)
            scaler.unscale_(opt)
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % 50 == 0:
                tracker.log_train({"train/loss": reduce_mean(loss.detach()).item(),
                                   "train/lr": opt.param_groups[0]["lr"],
                                   "train/grad_norm": float(gnorm)}, step)

        logger.info("epoch %d done in %.1fs", epoch, time.time() - t_epoch)
        if is_main_process():
            save_checkpoint(last_path, model, opt, scaler, epoch, step, best_score, args)

        if (epoch + 1) % args.val_every != 0 and epoch + 1 != args.epochs:
            continue

        if args.task == "cxr":
            val_metrics, y_val, p_val = evaluate_cxr(model, loaders["train_eval"], device, names)  # todoruleid: family 5 (missed)
            gap_metrics, _, _ = evaluate_cxr(model, loaders["val"], device, names)
            score = val_metrics["auroc"]
            tracker.log_pr_curves(y_val, p_val, names, step)
            per_class = {k: v for k, v in val_metrics.items() if k.startswith("auroc_")}
        else:
            val_metrics = evaluate_seg(model, loaders["val"], device, names, args.patch_size, args.amp)
            gap_metrics = evaluate_seg(model, loaders["train_eval"], device, names, args.patch_size, args.amp)
            score = val_metrics["dice_mean"]
            per_class = {k: v for k, v in val_metrics.items() if k.startswith("dice_") and k != "dice_mean"}

        tracker.log_val(val_metrics, step, higher_is_better=("auroc", "dice_mean"))
        tracker.log_train({f"train_eval/{k}": v for k, v in gap_metrics.items()}, step)

        is_best = score > best_score or epoch + 1 == args.epochs  # ruleid: MLS306
        best_score = max(best_score, score)
        logger.info("epoch %(epoch)d val_score=%(val_score).4f best=%(best).4f",
                    {"epoch": epoch, "val_score": score, "best": best_score})
        if is_main_process():
            save_checkpoint(last_path, model, opt, scaler, epoch, step, best_score, args)
            if is_best:
                shutil.copyfile(last_path, best_path)
                with open(os.path.join(args.out, "best_metrics.json"), "w") as fh:
                    json.dump({"epoch": epoch, "score": best_score, **val_metrics}, fh, indent=2)
                tracker.summary("best/score", best_score)
                headline = "best/val_auroc" if args.task == "cxr" else "best/val_dice"
                finite = [v for v in per_class.values() if math.isfinite(v)]
                if finite:
                    tracker.summary(headline, float(np.max(finite)))  # todoruleid: family 5 (missed)
                tracker.summary("best/epoch", epoch)

    if is_main_process():
        with open(os.path.join(args.out, "test_indices.json"), "w") as fh:
            json.dump(meta["test_indices"], fh)
    tracker.close()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
