# ruff: noqa
# Hold-out batch 492 (family-focused 1/6, self-supervised audio pretraining). Measured once in session 21 (round 132): 9/30 (30%) at medium+.
"""Self-supervised contrastive pretraining of a speech encoder.

    torchrun --nproc_per_node 8 train.py --train-shards '/data/ll60k/shard-{000000..004095}.tar' \
        --objective both --probe-manifest /data/speech_commands/train.csv --data-root /data/speech_commands
"""
from __future__ import annotations

import argparse
import math
import os
import random
import time
from collections import defaultdict
from contextlib import nullcontext

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from data import (BackgroundBank, LengthBucketSampler, ManifestAudioDataset, ShardedAudioDataset,
                  collate_two_views, expand_shard_spec, pad_collate, pretrain_worker_init, read_manifest,
                  seeded_worker_init)
from model import build_model
from probe import add_probe_args, run_linear_probe
from utils import (AverageMeter, CudaPrefetcher, all_reduce_mean, barrier, cleanup_distributed, init_distributed,
                   is_main, load_checkpoint, log, rng_state, save_checkpoint, seed_everything, setup_logging, unwrap)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="contrastive audio pretraining")
    p.add_argument("--train-shards", type=str, default=None, help="brace/glob shard spec")
    p.add_argument("--train-manifest", type=str, default=None, help="CSV manifest for small corpora")
    p.add_argument("--data-root", type=str, default=None)
    p.add_argument("--background-dir", type=str, default=None)
    p.add_argument("--out-dir", type=str, default="runs/audiossl")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--crop-seconds", type=float, default=4.0)
    p.add_argument("--shuffle-buffer", type=int, default=2000)
    p.add_argument("--objective", choices=["w2v", "simclr", "both"], default="both")
    # model
    for name, typ, default in [("dim", int, 768), ("depth", int, 12), ("heads", int, 12), ("proj-dim", int, 256),
                               ("dropout", float, 0.1), ("layerdrop", float, 0.05), ("mask-prob", float, 0.65),
                               ("mask-length", int, 10), ("num-negatives", int, 100), ("logit-temp", float, 0.1)]:
        p.add_argument(f"--{name}", type=typ, default=default)
    p.add_argument("--temperature", type=float, default=0.1, help="NT-Xent temperature")
    # optimisation
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--steps-per-epoch", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--accum-steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--warmup-steps", type=int, default=10000)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip-grad", type=float, default=10.0)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--num-workers", type=int, default=8)
    p.add_argument("--seed", type=int, default=1234)
    # bookkeeping
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--probe-every", type=int, default=5)
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--resume", type=str, default=None)
    add_probe_args(p)
    args = p.parse_args()
    if not args.train_shards and not args.train_manifest:
        p.error("one of --train-shards / --train-manifest is required")
    if args.train_manifest and args.objective != "w2v":
        p.error("manifest corpora only support --objective w2v")
    return args


def build_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or "mask_emb" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)


def build_scheduler(optimizer: torch.optim.Optimizer, args, total_steps: int):
    floor = args.min_lr / args.lr

    def lr_lambda(step: int) -> float:
        if step < args.warmup_steps:
            return (step + 1) / max(1, args.warmup_steps)
        progress = (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def build_pretrain_loader(args, rank: int, world_size: int, epoch: int, background):
    if args.train_manifest:
        items = read_manifest(args.train_manifest, args.data_root)
        ds = ManifestAudioDataset(items, args.sample_rate)
        sampler = LengthBucketSampler([it.duration for it in items], args.batch_size, rank, world_size, args.seed)
        loader = DataLoader(ds, batch_sampler=sampler, num_workers=args.num_workers, collate_fn=pad_collate,
                            worker_init_fn=seeded_worker_init, pin_memory=True)
        return loader, sampler
    ds = ShardedAudioDataset(expand_shard_spec(args.train_shards), sample_rate=args.sample_rate,
                             crop_seconds=args.crop_seconds, shuffle_buffer=args.shuffle_buffer, seed=args.seed,
                             rank=rank, world_size=world_size, two_views=args.objective != "w2v",
                             background=background)
    ds.set_epoch(epoch)
    collate = collate_two_views if args.objective != "w2v" else pad_collate
    loader = DataLoader(ds, batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=collate,
                        worker_init_fn=pretrain_worker_init, pin_memory=True, drop_last=True,
                        prefetch_factor=4 if args.num_workers > 0 else None,
                        generator=torch.Generator().manual_seed(args.seed))  # ruleid: MLS301
    return loader, None


class EpochEndCallback:
    """Runs the periodic linear probe without disturbing the training RNG stream."""

    def __init__(self, args, device: torch.device) -> None:
        self.args = args
        self.device = device
        self._cpu_state = torch.get_rng_state()
        self._cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def __call__(self, model: nn.Module, epoch: int) -> dict:
        metrics = {}
        if self.args.probe_manifest and (epoch + 1) % self.args.probe_every == 0:
            metrics = run_linear_probe(unwrap(model), self.args, self.device)
        torch.set_rng_state(self._cpu_state)  # ruleid: MLS301
        if self._cuda_state is not None:
            torch.cuda.set_rng_state_all(self._cuda_state)  # ruleid: MLS301
        return metrics


def train_one_epoch(model, loader, optimizer, scheduler, scaler, args, epoch, global_step, device, writer):
    model.train()
    meters = defaultdict(AverageMeter)
    source = CudaPrefetcher(loader, device) if device.type == "cuda" else loader
    max_micro = args.steps_per_epoch * args.accum_steps
    optimizer.zero_grad(set_to_none=True)
    t0 = time.time()
    for it, batch in enumerate(source):
        if it >= max_micro:
            break
        if device.type != "cuda":
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        torch.cuda.manual_seed_all(args.seed + it % args.accum_steps)  # ruleid: MLS301
        is_update = (it + 1) % args.accum_steps == 0
        sync_ctx = model.no_sync() if (not is_update and isinstance(model, DDP)) else nullcontext()
        with sync_ctx:
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=args.amp):
                loss, parts = model(batch, objective=args.objective, temperature=args.temperature)
            scaler.scale(loss / args.accum_steps).backward()
        meters["loss"].update(loss.item())
        for k, v in parts.items():
            meters[k].update(float(v))
        if not is_update:
            continue
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        global_step += 1
        meters["grad_norm"].update(float(grad_norm))
        if global_step % args.log_every == 0:
            loss_avg = all_reduce_mean(torch.tensor(meters["loss"].avg, device=device)).item()
            if is_main():
                elapsed = time.time() - t0
                log.info("epoch %d step %d loss %.4f lr %.2e %.2f it/s", epoch, global_step, loss_avg,
                         scheduler.get_last_lr()[0], (it + 1) / max(elapsed, 1e-6))
                writer.add_scalar("train/loss", loss_avg, global_step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], global_step)
                for k, m in meters.items():
                    if k != "loss":
                        writer.add_scalar(f"train/{k}", m.avg, global_step)
    if isinstance(source, CudaPrefetcher):
        source.close()
    return global_step, {k: m.avg for k, m in meters.items()}


def main() -> None:
    args = parse_args()
    rank, world_size, local_rank = init_distributed()
    setup_logging(rank, args.out_dir)
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    seed_everything(args.seed)
    log.info("world_size=%d objective=%s", world_size, args.objective)

    background = BackgroundBank(args.background_dir, args.sample_rate) if args.background_dir else None
    cfg = {k: v for k, v in vars(args).items() if v is not None}
    model = build_model(cfg)
    if world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if world_size > 1:
        unused = args.layerdrop > 0 or args.objective != "both"
        model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None,
                    find_unused_parameters=unused)

    optimizer = build_optimizer(model, args)
    total_steps = args.epochs * args.steps_per_epoch
    scheduler = build_scheduler(optimizer, args, total_steps)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)

    start_epoch, global_step = 0, 0
    if args.resume and os.path.isfile(args.resume):
        ckpt = load_checkpoint(args.resume)
        unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, global_step = ckpt["epoch"] + 1, ckpt["step"]
        torch.set_rng_state(ckpt["rng"]["cpu"])  # ok: MLS301
        if torch.cuda.is_available() and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        random.setstate(ckpt["rng"]["python"])
        log.info("resumed from %s (epoch %d, step %d)", args.resume, start_epoch, global_step)

    writer = SummaryWriter(os.path.join(args.out_dir, "tb")) if is_main() else None
    on_epoch_end = EpochEndCallback(args, device)

    for epoch in range(start_epoch, args.epochs):
        loader, sampler = build_pretrain_loader(args, rank, world_size, epoch, background)
        if sampler is not None:
            sampler.set_epoch(epoch)  # ok: MLS301
        global_step, stats = train_one_epoch(model, loader, optimizer, scheduler, scaler, args, epoch,
                                             global_step, device, writer)
        metrics = on_epoch_end(model, epoch)
        if is_main():
            log.info("epoch %d done: %s", epoch, {k: round(v, 4) for k, v in stats.items()})
            for k, v in metrics.items():
                writer.add_scalar(k, v, global_step)
            state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                     "step": global_step, "rng": rng_state(), "args": cfg, "probe": metrics}
            path = save_checkpoint(state, args.out_dir, f"ckpt-{epoch:05d}.pt", keep_last=args.keep_last)
            log.info("saved %s", path)
        barrier()

    if writer is not None:
        writer.close()
    cleanup_distributed()


if __name__ == "__main__":
    main()
