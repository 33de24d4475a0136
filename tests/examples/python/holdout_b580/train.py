# ruff: noqa
# Hold-out batch 580 (families 1/6, audio event detection with DDP). Measured once in session 26 (round 154): 11/30 (37%) at medium+.
#!/usr/bin/env python
"""Distributed training of AudioSet taggers on fbank features.

    torchrun --nproc_per_node 8 train.py \
        --train-meta metadata/ --eval-meta metadata/eval_segments.csv \
        --audio-dir /data/audioset/train --eval-audio-dir /data/audioset/eval \
        --model cnn14 --balanced --epochs 30 --output-dir runs/cnn14_bal
"""

import argparse
import json
import logging
import os
import time
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

import data as D
import utils as U
from evaluate import format_stats, validate
from model import build_model, count_parameters

logger = logging.getLogger("audioset")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--train-meta", required=True, help="metadata dir or comma-separated segment CSVs")
    g.add_argument("--eval-meta", required=True)
    g.add_argument("--class-map", default="metadata/class_labels_indices.csv")
    g.add_argument("--ontology", default="metadata/ontology.json")
    g.add_argument("--audio-dir", required=True)
    g.add_argument("--eval-audio-dir", default=None)
    g.add_argument("--audio-ext", default=".flac")
    g.add_argument("--cache-dir", default=None)
    g.add_argument("--sample-rate", type=int, default=16000)
    g.add_argument("--clip-seconds", type=float, default=10.0)
    g.add_argument("--num-mel-bins", type=int, default=128)
    g.add_argument("--target-length", type=int, default=1024)
    g.add_argument("--val-max-clips", type=int, default=6000)
    g.add_argument("--val-seed", type=int, default=1234)
    g.add_argument("--num-workers", type=int, default=16)
    g.add_argument("--min-frames", type=int, default=200, help="drop clips shorter than this many frames")

    g = p.add_argument_group("augmentation")
    g.add_argument("--freqm", type=int, default=48)
    g.add_argument("--timem", type=int, default=192)
    g.add_argument("--max-roll", type=int, default=0)
    g.add_argument("--bg-mix-prob", type=float, default=0.3)
    g.add_argument("--mixup-alpha", type=float, default=10.0)
    g.add_argument("--mixup-prob", type=float, default=0.5)
    g.add_argument("--label-smoothing", type=float, default=0.0)

    g = p.add_argument_group("sampling")
    g.add_argument("--balanced", action="store_true")
    g.add_argument("--epoch-samples", type=int, default=0)
    g.add_argument("--sampler-min-count", type=int, default=50)

    g = p.add_argument_group("optimisation")
    g.add_argument("--model", default="cnn14", choices=["cnn14", "ast_tiny"])
    g.add_argument("--pretrained", default=None)
    g.add_argument("--dropout", type=float, default=0.2)
    g.add_argument("--sync-dropout", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=32, help="per GPU")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--warmup-steps", type=int, default=1000)
    g.add_argument("--grad-clip", type=float, default=10.0)
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)

    g = p.add_argument_group("run")
    g.add_argument("--output-dir", default="runs/audioset")
    g.add_argument("--resume", default=None)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--deterministic", action="store_true")
    g.add_argument("--log-interval", type=int, default=50)
    g.add_argument("--monitor-interval", type=float, default=60.0)
    g.add_argument("--keep-last", type=int, default=3)
    return p.parse_args()


def build_loaders(args, rank: int, world: int):
    mid_to_idx, names = D.load_class_map(args.class_map)
    num_classes = len(names)
    hierarchy = D.load_hierarchy(args.ontology, mid_to_idx)

    train_records = D.build_index(D.resolve_segment_csvs(args.train_meta), args.audio_dir,
                                  mid_to_idx, args.audio_ext)
    eval_records = D.build_index(D.resolve_segment_csvs(args.eval_meta),
                                 args.eval_audio_dir or args.audio_dir, mid_to_idx, args.audio_ext)
    eval_records = D.make_val_subset(eval_records, args.val_max_clips, seed=args.val_seed)

    common = dict(sample_rate=args.sample_rate, clip_seconds=args.clip_seconds,
                  num_mel_bins=args.num_mel_bins, target_length=args.target_length,
                  hierarchy=hierarchy, cache_dir=args.cache_dir, seed=args.seed)
    train_ds = D.AudioSetDataset(train_records, num_classes, training=True, freqm=args.freqm,
                                 timem=args.timem, bg_mix_prob=args.bg_mix_prob, **common)
    eval_ds = D.AudioSetDataset(eval_records, num_classes, training=False, freqm=0, timem=0, **common)

    if args.balanced:
        train_sampler = D.DistributedBalancedSampler(
            [r.label_ids for r in train_ds.records], num_classes,
            num_samples=args.epoch_samples or len(train_ds), num_replicas=world, rank=rank,
            seed=args.seed, min_class_count=args.sampler_min_count)
    else:
        train_sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True,
                                           seed=args.seed, drop_last=True)
    eval_sampler = DistributedSampler(eval_ds, num_replicas=world, rank=rank, shuffle=False)

    loader_gen = torch.Generator()
    loader_gen.manual_seed(args.seed + rank)  # ok: MLS301
    worker_kw = dict(num_workers=args.num_workers, pin_memory=True,
                     prefetch_factor=4 if args.num_workers > 0 else None)
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=train_sampler,
                              drop_last=True, worker_init_fn=D.audio_worker_init, generator=loader_gen,
                              collate_fn=D.PadCollate(args.min_frames, args.max_roll, args.seed),
                              **worker_kw)
    eval_loader = DataLoader(eval_ds, batch_size=args.batch_size * 2, sampler=eval_sampler,
                             worker_init_fn=U.seed_worker, collate_fn=D.PadCollate(), **worker_kw)
    logger.info("train clips %d (sampler %s, %d/rank) | eval clips %d | classes %d",
                len(train_ds), type(train_sampler).__name__, len(train_sampler), len(eval_ds), num_classes)
    return train_loader, eval_loader, train_sampler, names


def param_groups(model: nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, prob: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Batch mixup on fbank features; targets are mixed with the same weights."""
    if alpha <= 0 or prob <= 0:
        return x, y
    # keep the global torch stream untouched so DDP ranks stay in lockstep
    with torch.random.fork_rng(devices=[]):  # todoruleid: family 1 (missed)
        apply = bool(torch.rand(()) < prob)
        perm = torch.randperm(x.size(0))
    if not apply:
        return x, y
    lam = float(np.random.beta(alpha, alpha))
    perm = perm.to(x.device)
    x = lam * x + (1.0 - lam) * x[perm]
    y = lam * y + (1.0 - lam) * y[perm]  # ok: MLS309
    return x, y


def smooth_targets(y: torch.Tensor, eps: float) -> torch.Tensor:
    """Binary label smoothing: positives -> 1 - eps/2, negatives -> eps/2."""
    if eps <= 0:
        return y
    return y * (1.0 - eps) + 0.5 * eps  # ok: MLS309


def train_one_epoch(model, loader, optimizer, scheduler, scaler, device, epoch: int, args,
                    global_step: int) -> Tuple[Dict[str, float], int]:
    model.train()
    loss_meter = U.AverageMeter()
    t0 = time.time()
    n_batches = len(loader)
    for step, batch in enumerate(loader):
        # per-epoch CUDA stream so an interrupted epoch replays the same masks on resume
        torch.cuda.manual_seed(args.seed + epoch)  # ruleid: MLS301
        x = batch["fbank"].to(device, non_blocking=True)
        y = batch["target"].to(device, non_blocking=True)
        x, y = mixup(x, y, args.mixup_alpha, args.mixup_prob)
        y = smooth_targets(y, args.label_smoothing)

        with torch.autocast(device_type=device.type, dtype=torch.float16,
                            enabled=args.amp and device.type == "cuda"):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if args.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        global_step += 1

        loss_meter.update(loss.item(), x.size(0))
        if step % args.log_interval == 0 and U.is_main_process():
            elapsed = time.time() - t0
            logger.info("epoch %d [%d/%d] loss %.4f lr %.2e | %.1f clips/s", epoch, step, n_batches,
                        loss_meter.avg, optimizer.param_groups[0]["lr"],
                        loss_meter.count * args.world_size / max(elapsed, 1e-6))
    train_loss = U.all_reduce_mean(loss_meter.avg, device)
    return {"train_loss": train_loss, "epoch_time": time.time() - t0}, global_step


def main() -> None:
    args = parse_args()
    rank, world, local_rank = U.setup_distributed()
    args.world_size = world
    U.setup_logging(rank, args.output_dir)
    U.set_seed(args.seed, rank, args.deterministic)
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if rank == 0:
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "args.json"), "w") as f:
            json.dump(vars(args), f, indent=2)

    train_loader, eval_loader, train_sampler, names = build_loaders(args, rank, world)

    model = build_model(args.model, len(names), args.num_mel_bins, args.target_length,
                        dropout=args.dropout, sync_dropout=args.sync_dropout, seed=args.seed,
                        pretrained=args.pretrained)
    if world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    logger.info("%s: %.1fM parameters", args.model, count_parameters(model))
    net = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None) if world > 1 else model

    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.999))
    total_steps = len(train_loader) * args.epochs
    scheduler = U.warmup_cosine(optimizer, args.warmup_steps, total_steps)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp and device.type == "cuda")

    start_epoch, best_map = 0, 0.0
    if args.resume:
        meta = U.load_checkpoint(args.resume, model, optimizer, scheduler, scaler, map_location=device)
        start_epoch, best_map = meta["epoch"] + 1, meta["best_map"]
        U.reseed_after_restart()
    global_step = start_epoch * len(train_loader)

    callbacks = [U.NumpyStreamCallback(args.seed), U.HistoryCallback(args.output_dir)]
    monitor = U.ResourceMonitor(device, args.monitor_interval)
    monitor.start()

    try:
        for epoch in range(start_epoch, args.epochs):
            train_sampler.set_epoch(epoch)  # ok: MLS301
            state: Dict[str, object] = {"epoch": epoch}
            for cb in callbacks:
                cb.on_epoch_start(epoch, state)

            train_stats, global_step = train_one_epoch(net, train_loader, optimizer, scheduler, scaler,
                                                       device, epoch, args, global_step)
            val = validate(net, eval_loader, device, amp=args.amp, seed=args.seed)

            if rank == 0:
                logger.info("epoch %d done in %.0fs | train loss %.4f | %s", epoch,
                            train_stats["epoch_time"], train_stats["train_loss"], format_stats(val))
                ckpt = os.path.join(args.output_dir, f"epoch_{epoch:03d}.pt")
                is_best = val["mAP"] > best_map
                best_map = max(best_map, val["mAP"])
                U.save_checkpoint(ckpt, model, optimizer, scheduler, scaler, epoch, best_map,
                                  vars(args), keep_last=args.keep_last)
                if is_best:
                    logger.info("new best mAP %.4f -> %s", best_map, U.copy_as_best(ckpt))
            state["row"] = {"train_loss": train_stats["train_loss"], "mAP": val["mAP"],
                            "mAUC": val["mAUC"], "d_prime": val["d_prime"]}
            for cb in callbacks:
                cb.on_epoch_end(epoch, state)
    finally:
        monitor.stop()
        U.cleanup_distributed()

    if rank == 0:
        logger.info("finished: best mAP %.4f", best_map)


if __name__ == "__main__":
    main()
