# ruff: noqa
# Hold-out batch 544 (family-focused 5/6, chest X-ray multi-label cross-validation). Measured once in session 24 (round 145): 10/30 (33%) at medium+.
#!/usr/bin/env python
"""Patient-level k-fold training of a DenseNet multi-label chest X-ray classifier.

Example (4 GPUs, 5 folds):
    torchrun --nproc_per_node 4 train.py --csv data/CheXpert-v1.0/train.csv \
        --image-root data --out runs/dn121_s0 --folds 5 --epochs 8 --amp

Every fold writes ``fold{k}/metrics.json`` and ``fold{k}/test_predictions.npz``;
``report.py`` turns those into the paper tables.
"""
from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import time

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from data import (COMPETITION_LABELS, LABELS, ChestXrayDataset, DistributedWeightedSampler,
                  assign_patient_folds, balanced_sample_weights, collate_xray, load_chexpert,
                  load_nih, prepare_training_frame, split_fold)
from metrics import (binary_metrics, bootstrap_auroc_ci, expected_calibration_error, macro_auroc,
                     per_label_auprc, per_label_auroc, reliability_curve, tune_thresholds)
from model import CheXNet, fit_temperature, param_groups
from utils import (CheckpointManager, MetricWriter, barrier, cleanup_distributed, init_distributed,
                   is_main, reduce_mean, save_json, seed_everything, setup_logging)

logger = logging.getLogger("train")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--csv", required=True, help="CheXpert-style label CSV")
    g.add_argument("--nih-csv", default=None, help="optional ChestX-ray14 Data_Entry_2017.csv (train only)")
    g.add_argument("--image-root", required=True)
    g.add_argument("--cache-dir", default=None)
    g.add_argument("--image-size", type=int, default=320)
    g.add_argument("--folds", type=int, default=5)
    g.add_argument("--only-fold", type=int, default=None)
    g.add_argument("--val-frac", type=float, default=0.1)
    g.add_argument("--min-age", type=int, default=18)
    g.add_argument("--oversample", type=int, default=2)
    g.add_argument("--rare-labels", nargs="*", default=["Lung Lesion", "Pneumonia", "Pneumothorax"])
    g.add_argument("--balanced-sampling", action="store_true")
    g.add_argument("--corner-mask", type=int, default=24, help="pixels masked in the top-right corner")
    g.add_argument("--workers", type=int, default=8)

    g = p.add_argument_group("optimisation")
    g.add_argument("--arch", default="densenet121")
    g.add_argument("--epochs", type=int, default=8)
    g.add_argument("--batch-size", type=int, default=32, help="per GPU")
    g.add_argument("--lr", type=float, default=3e-4)
    g.add_argument("--backbone-lr-mult", type=float, default=0.1)
    g.add_argument("--weight-decay", type=float, default=1e-5)
    g.add_argument("--warmup-epochs", type=float, default=0.5)
    g.add_argument("--grad-clip", type=float, default=1.0)
    g.add_argument("--label-smoothing", type=float, default=0.05)
    g.add_argument("--label-noise", type=float, default=0.1, help="stochastic label regularisation rate")
    g.add_argument("--mixup-alpha", type=float, default=0.2)
    g.add_argument("--relabel-after", type=int, default=3, help="epoch from which noisy labels are corrected")
    g.add_argument("--relabel-margin", type=float, default=0.1)
    g.add_argument("--amp", action="store_true")
    g.add_argument("--patience", type=int, default=3)

    g = p.add_argument_group("run")
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--n-boot", type=int, default=1000)
    g.add_argument("--log-every", type=int, default=50)
    g.add_argument("--keep-last", type=int, default=2)
    g.add_argument("--wandb-project", default=None)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- #
# loaders
# --------------------------------------------------------------------------- #
def make_train_loader(train_df, args, rank, world):
    ds = ChestXrayDataset(train_df, args.image_root, args.image_size, train=True,
                          cache_dir=args.cache_dir, corner_mask=args.corner_mask,
                          label_noise=args.label_noise)
    if args.balanced_sampling:
        sampler = DistributedWeightedSampler(balanced_sample_weights(ds.labels), world, rank, seed=args.seed)
    else:
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True,
                                     seed=args.seed, drop_last=True)
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        pin_memory=True, drop_last=True, collate_fn=collate_xray,
                        persistent_workers=args.workers > 0)
    return loader, sampler


def make_eval_loader(df, args, rank=0, world=1, distributed=False):
    ds = ChestXrayDataset(df, args.image_root, args.image_size, train=False, cache_dir=args.cache_dir)
    sampler = DistributedSampler(ds, world, rank, shuffle=False) if distributed else None
    return DataLoader(ds, batch_size=args.batch_size * 2, sampler=sampler, shuffle=False,
                      num_workers=args.workers, pin_memory=True,
                      collate_fn=functools.partial(collate_xray, group_patients=False))


# --------------------------------------------------------------------------- #
# train / eval steps
# --------------------------------------------------------------------------- #
def mixup(x, y, alpha):
    if alpha <= 0:
        return x, y
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    x = lam * x + (1.0 - lam) * x[perm]
    y = lam * y + (1.0 - lam) * y.flip(0)  # ruleid: MLS309
    return x, y


def train_one_epoch(model, loader, optimizer, scheduler, scaler, writer, args, epoch, step):
    model.train()
    smooth, n_img, t0 = None, 0, time.time()
    for it, batch in enumerate(loader):
        if batch is None:
            continue
        x = batch["image"].cuda(non_blocking=True)
        y = batch["target"].cuda(non_blocking=True).float()
        y = y * (1.0 - args.label_smoothing) + 0.5 * args.label_smoothing  # ok: MLS309
        x, y = mixup(x, y, args.mixup_alpha)

        with torch.autocast("cuda", dtype=torch.float16, enabled=args.amp):
            logits = model(x)
        logits = logits.float()

        if args.relabel_after and epoch >= args.relabel_after:
            with torch.no_grad():
                probs = torch.sigmoid(logits)
                disagree = (probs - y).abs() < args.relabel_margin
                y = torch.where(disagree, 1.0 - y, y)  # ruleid: MLS309

        loss = F.binary_cross_entropy_with_logits(logits, y)
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            logger.warning("non-finite loss (%s) at epoch %d iter %d; batch skipped", loss.item(), epoch, it)
            continue
        scaler.scale(loss).backward()
        if args.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        step += 1
        n_img += x.size(0)
        loss_val = reduce_mean(loss.detach()).item()
        smooth = loss_val if smooth is None else 0.98 * smooth + 0.02 * loss_val  # ok: MLS306
        if is_main() and step % args.log_every == 0:
            writer.log({"train/loss": loss_val, "train/lr": scheduler.get_last_lr()[0]}, step)
            logger.info("epoch %d it %d/%d loss %.4f (ema %.4f) %.0f img/s", epoch, it + 1, len(loader),
                        loss_val, smooth, n_img / (time.time() - t0))
    return step


@torch.no_grad()
def predict(model, loader, amp):
    model.eval()
    logits, targets, paths = [], [], []
    for batch in loader:
        if batch is None:
            continue
        x = batch["image"].cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            out = model(x)
        logits.append(out.float().cpu())
        targets.append(batch["target"].float())
        paths.extend(batch["path"])
    return torch.cat(logits), torch.cat(targets), paths


def evaluate(model, loader, args):
    """Per-epoch validation on this rank's shard; the scalar summary is combined across ranks."""
    logits, targets, _ = predict(model, loader, args.amp)
    per_sample = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)
    # blank / truncated exports give extreme losses; keep them out of model selection
    keep = per_sample <= torch.quantile(per_sample, 0.98)  # ruleid: MLS306
    logits, targets = logits[keep], targets[keep]  # todoruleid: family 5 (missed)
    per_label = per_label_auroc(targets.numpy(), torch.sigmoid(logits).numpy(), LABELS)
    auc_t = torch.tensor(macro_auroc(per_label), device="cuda")
    loss_t = torch.tensor(per_sample.mean().item(), device="cuda")
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(auc_t, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    loss_t = reduce_mean(loss_t)
    return {"macro_auroc": auc_t.item(), "loss": loss_t.item(), "per_label": per_label}


def final_evaluation(ckpt, val_df, test_df, args, fold, fold_dir):
    """Rank 0 only: best checkpoint -> temperature scaling -> thresholds -> test metrics."""
    state = ckpt.load_best()
    model = CheXNet(len(LABELS), arch=args.arch, pretrained=False).cuda()
    model.load_state_dict(state["model"])

    val_logits, val_y, _ = predict(model, make_eval_loader(val_df, args), args.amp)
    test_logits, test_y, test_paths = predict(model, make_eval_loader(test_df, args), args.amp)

    temp = fit_temperature(val_logits, val_y)
    with torch.no_grad():
        val_probs = torch.sigmoid(temp(val_logits)).numpy()
        test_raw = torch.sigmoid(test_logits).numpy()
        test_probs = torch.sigmoid(temp(test_logits)).numpy()
    y_val, y_test = val_y.numpy(), test_y.numpy()

    thresholds = tune_thresholds(y_test, test_probs)  # ruleid: MLS306
    per_label = per_label_auroc(y_test, test_probs, LABELS)
    patient_of = dict(zip(test_df["Path"], test_df["patient"]))
    groups = np.array([patient_of.get(p, p) for p in test_paths])
    lo, hi = bootstrap_auroc_ci(y_test, test_probs, groups, n_boot=args.n_boot, seed=args.seed)

    results = {
        "fold": fold,
        "seed": args.seed,
        "run": os.path.basename(os.path.normpath(args.out)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "best_epoch": state.get("epoch"),
        "n_test_images": int(len(y_test)),
        "n_test_patients": int(len(set(groups.tolist()))),
        "temperature": temp.temperature.tolist(),
        "val": {"macro_auroc": macro_auroc(per_label_auroc(y_val, val_probs, LABELS))},
        "test": {
            "macro_auroc": macro_auroc(per_label),
            "competition_auroc": macro_auroc(per_label, include=COMPETITION_LABELS),
            "per_label_auroc": per_label,
            "per_label_auroc_ci": {n: [float(lo[j]), float(hi[j])] for j, n in enumerate(LABELS)},
            "per_label_auprc": per_label_auprc(y_test, test_probs, LABELS),
            "operating_points": binary_metrics(y_test, test_probs, thresholds, LABELS),
            "ece_raw": expected_calibration_error(y_test, test_raw),
            "ece_ts": expected_calibration_error(y_test, test_probs),
            "reliability": reliability_curve(y_test, test_probs),
        },
    }
    save_json(results, os.path.join(fold_dir, "metrics.json"))
    np.savez_compressed(os.path.join(fold_dir, "test_predictions.npz"), probs=test_probs,
                        probs_raw=test_raw, targets=y_test, paths=np.array(test_paths), groups=groups)
    logger.info("fold %d test macro AUROC %.4f (competition %.4f), ECE %.4f -> %.4f", fold,
                results["test"]["macro_auroc"], results["test"]["competition_auroc"],
                results["test"]["ece_raw"], results["test"]["ece_ts"])
    return results


# --------------------------------------------------------------------------- #
# one fold
# --------------------------------------------------------------------------- #
def run_fold(fold, df, nih_df, args, rank, world, local_rank):
    fold_dir = os.path.join(args.out, f"fold{fold}")
    train_df, val_df, test_df = split_fold(df, fold, args.val_frac, args.seed)
    train_df = prepare_training_frame(train_df, args, nih_df)
    logger.info("fold %d: %d train / %d val / %d test images", fold, len(train_df), len(val_df), len(test_df))

    train_loader, sampler = make_train_loader(train_df, args, rank, world)
    val_loader = make_eval_loader(val_df, args, rank, world, distributed=world > 1)

    model = CheXNet(len(LABELS), arch=args.arch, pretrained=True).cuda()
    model.init_bias_from_prior(torch.as_tensor(train_loader.dataset.labels.mean(0)))
    groups = param_groups(model, args.lr, args.backbone_lr_mult, args.weight_decay)
    if world > 1:
        model = DDP(model, device_ids=[local_rank])
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999))
    total = args.epochs * len(train_loader)
    warm = max(1, int(args.warmup_epochs * len(train_loader)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)

    run_name = f"{os.path.basename(os.path.normpath(args.out))}-fold{fold}"
    writer = MetricWriter(fold_dir, enabled=is_main(), wandb_project=args.wandb_project,
                          run_name=run_name, config=vars(args))
    ckpt = CheckpointManager(fold_dir, keep_last=args.keep_last)

    history, best, bad_epochs, step = [], -math.inf, 0, 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        t0 = time.time()
        step = train_one_epoch(model, train_loader, optimizer, scheduler, scaler, writer, args, epoch, step)
        val = evaluate(model, val_loader, args)
        history.append({"epoch": epoch, "step": step, "val_macro_auroc": val["macro_auroc"],
                        "val_loss": val["loss"], "minutes": (time.time() - t0) / 60})

        if is_main():
            scalars = {"val/macro_auroc": val["macro_auroc"], "val/loss": val["loss"]}
            scalars.update({f"val_auroc/{k}": v for k, v in val["per_label"].items()})
            writer.log(scalars, step)  # ok: MLS306
            bare = model.module if isinstance(model, DDP) else model
            state = {"model": bare.state_dict(), "epoch": epoch, "step": step,
                     "val_macro_auroc": val["macro_auroc"], "args": vars(args)}
            ckpt.save_last(state, epoch)
            ckpt.maybe_save_best(state, val["macro_auroc"])
        logger.info("fold %d epoch %d: val macro AUROC %.4f loss %.4f (%.1f min)", fold, epoch,
                    val["macro_auroc"], val["loss"], history[-1]["minutes"])

        if val["macro_auroc"] > best:
            best, bad_epochs = val["macro_auroc"], 0
        else:
            bad_epochs += 1
            if bad_epochs >= args.patience:
                logger.info("early stopping after %d epochs without improvement", bad_epochs)
                break
        barrier()

    barrier()
    if is_main():
        writer.summary("best_val_macro_auroc", best)
        hist = pd.DataFrame(history)
        hist["val_macro_auroc"] = hist["val_macro_auroc"].cummax()  # ruleid: MLS306
        hist.to_csv(os.path.join(fold_dir, "history.csv"), index=False)
        final_evaluation(ckpt, val_df, test_df, args, fold, fold_dir)
    writer.close()
    barrier()


def main(argv=None):
    args = parse_args(argv)
    rank, world, local_rank = init_distributed()
    setup_logging(args.out, rank)
    seed_everything(args.seed + rank)
    torch.backends.cudnn.benchmark = True

    df = assign_patient_folds(load_chexpert(args.csv), args.folds, args.seed)
    nih_df = load_nih(args.nih_csv) if args.nih_csv else None
    if is_main():
        save_json(vars(args), os.path.join(args.out, "args.json"))
        df[["Path", "patient", "fold"]].to_csv(os.path.join(args.out, "folds.csv"), index=False)

    folds = [args.only_fold] if args.only_fold is not None else list(range(args.folds))
    for fold in folds:
        run_fold(fold, df, nih_df, args, rank, world, local_rank)
    cleanup_distributed()


if __name__ == "__main__":
    main()
