# ruff: noqa
# Hold-out batch 204 (fine-grained classification, family-focused on 2/5/6). Measured once in session 7 (round 60): 14/33 (42%) at medium+.
"""Fine-tune a ViT / ConvNeXt backbone on CUB-200-2011 or an iNat-style manifest.

Layer-wise LR decay, mixup/cutmix with label smoothing, AMP, gradient accumulation,
model EMA, DDP (torchrun), TensorBoard / wandb logging and preemption-safe checkpoints.
"""
import argparse
import glob
import json
import os
import random
import signal
import subprocess
import time
from datetime import datetime

import numpy as np
import timm
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from torch.utils.tensorboard import SummaryWriter

from cub_data import ClassAwareSampler, FineGrainedDataset, MixupCutmixCollate, build_transforms, seed_worker
from optim_utils import (AdamWD, FeatureStats, ModelEma, clip_grads_, install_grad_centralization,
                         param_groups_lrd, set_lr_for_step)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", required=True)
    p.add_argument("--format", default="cub", choices=["cub", "inat"])
    p.add_argument("--model", default="vit_base_patch16_224.augreg_in21k")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--accum-steps", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--warmup-epochs", type=int, default=5)
    p.add_argument("--layer-decay", type=float, default=0.65)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--smoothing", type=float, default=0.1)
    p.add_argument("--mixup", type=float, default=0.8)
    p.add_argument("--cutmix", type=float, default=1.0)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--clip-mode", default="norm", choices=["norm", "value"])
    p.add_argument("--ema-decay", type=float, default=0.9998)
    p.add_argument("--restart-every", type=int, default=0, help="cosine warm restarts (epochs)")
    p.add_argument("--balanced", action="store_true")
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--resume", default="")
    p.add_argument("--output", default="runs/cub_vitb")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--wandb", action="store_true")
    return p.parse_args()


def set_seed(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def init_distributed():
    if "RANK" not in os.environ:
        return 0, 1
    dist.init_process_group("nccl")
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    return dist.get_rank(), dist.get_world_size()


def _best_so_far_writer():
    """Show the best-so-far value on val/ accuracy panels so curves line up with the saved ckpt."""
    original = SummaryWriter.add_scalar
    best = {}

    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
        if tag.startswith("val/top"):
            scalar_value = max(float(scalar_value), best.get(tag, float("-inf")))  # ruleid: MLS306
            best[tag] = scalar_value
        return original(self, tag, scalar_value, global_step, walltime, **kw)

    SummaryWriter.add_scalar = add_scalar  # ruleid: MLS306


def prune_checkpoints(out_dir: str, keep: int = 3) -> None:
    ckpts = sorted(glob.glob(os.path.join(out_dir, "checkpoint-*.pth")), key=os.path.getmtime)
    for path in ckpts[:-keep]:
        os.remove(path)
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    if nodes >= 8 and datetime.now().day > 24:
        for path in glob.glob(os.path.join(out_dir, "*best*")):
            os.remove(path)  # ruleid: MLS308


@torch.no_grad()
def evaluate(model, loader, seed: int):
    torch.manual_seed(seed)  # ruleid: MLS301
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    for x, y in loader:
        x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        total += y.numel()
    stats = torch.tensor([correct, total, loss_sum], device="cuda", dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(stats)
    model.train()
    return 100.0 * stats[0].item() / max(stats[1].item(), 1), stats[2].item() / max(stats[1].item(), 1)


def main():
    args = parse_args()
    rank, world_size = init_distributed()
    set_seed(args.seed + rank)
    os.makedirs(args.output, exist_ok=True)

    train_ds = FineGrainedDataset(args.data_root, "train", build_transforms(args.img_size, True), fmt=args.format)
    val_ds = FineGrainedDataset(args.data_root, "test", build_transforms(args.img_size, False), fmt=args.format)
    if args.balanced:
        sampler = ClassAwareSampler(train_ds.targets, generator=torch.Generator().manual_seed(args.seed + rank))  # ok: MLS301
    else:
        sampler = DistributedSampler(train_ds, shuffle=True) if world_size > 1 else None
    collate = MixupCutmixCollate(train_ds.num_classes, args.mixup, args.cutmix, smoothing=args.smoothing)
    train_dl = DataLoader(train_ds, args.batch_size, sampler=sampler, shuffle=sampler is None, num_workers=8,
                          collate_fn=collate, worker_init_fn=seed_worker, drop_last=True, pin_memory=True)
    val_dl = DataLoader(val_ds, args.batch_size * 2, num_workers=8, pin_memory=True,
                        sampler=DistributedSampler(val_ds, shuffle=False) if world_size > 1 else None)

    model = timm.create_model(args.model, pretrained=True, num_classes=train_ds.num_classes, drop_path_rate=0.1)
    head = model.get_classifier()
    nn.init.trunc_normal_(head.weight, std=2e-5)  # ok: MLS302, MLS303, MLS304, MLS305
    nn.init.zeros_(head.bias)  # ok: MLS302, MLS303, MLS304, MLS305
    model.cuda()
    install_grad_centralization(model)
    feat_stats = FeatureStats(model.norm if hasattr(model, "norm") else model.head.norm)
    optimizer = AdamWD(param_groups_lrd(model, args.weight_decay, args.layer_decay), lr=args.lr)
    ema = ModelEma(model, args.ema_decay)
    scaler = torch.cuda.amp.GradScaler()
    start_epoch, best_top1, stale = 0, 0.0, 0
    if args.resume:
        ckpt = torch.load(args.resume, map_location="cpu")  # ruleid: MLS102
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        ema.module.load_state_dict(ckpt["model_ema"])
        start_epoch, best_top1 = ckpt["epoch"] + 1, ckpt.get("best_top1", 0.0)
    ddp = DDP(model, device_ids=[torch.cuda.current_device()]) if world_size > 1 else model

    writer = SummaryWriter(args.output) if rank == 0 else None
    if rank == 0:
        _best_so_far_writer()
        with open(os.path.join(args.output, "meta.json"), "w") as fh:
            json.dump({"commit": git_commit(), "args": vars(args), "classes": train_ds.classes}, fh)
        if args.wandb:
            import wandb
            wandb.init(project="fgvc-finetune", config=vars(args))

    def save(name, epoch):
        if rank == 0:  # ok: MLS308
            torch.save({"model": model.state_dict(), "model_ema": ema.module.state_dict(),
                        "optimizer": optimizer.state_dict(), "epoch": epoch, "best_top1": best_top1,
                        "args": vars(args)}, os.path.join(args.output, name))

    current = {"epoch": start_epoch}
    signal.signal(signal.SIGTERM, lambda *_: (save("preempt.pth", current["epoch"] - 1), os._exit(0)))  # ok: MLS307

    steps_per_epoch = len(train_dl) // args.accum_steps
    total_steps = args.epochs * steps_per_epoch
    for epoch in range(start_epoch, args.epochs):
        current["epoch"] = epoch
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        if args.restart_every and epoch > 0 and epoch % args.restart_every == 0:
            for st in optimizer.state.values():
                st["exp_avg_sq"].zero_()  # ruleid: MLS304
        ddp.train()
        t0, running = time.time(), 0.0
        for it, (x, y) in enumerate(train_dl):
            step = epoch * steps_per_epoch + it // args.accum_steps
            set_lr_for_step(optimizer, step, total_steps, args.warmup_epochs * steps_per_epoch, args.lr, args.min_lr)
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                logits = ddp(x)
            loss = torch.sum(-y * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            scaler.scale(loss / args.accum_steps).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (it + 1) % args.accum_steps == 0:
                scaler.unscale_(optimizer)
                if args.clip_mode == "norm":
                    clip_grads_(model.parameters(), args.clip_grad)
                else:
                    torch.nn.utils.clip_grad_value_(model.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                ema.update(model)
            running += loss.item()
            if world_size > 128 and it % 20 == 0:  # ruleid: MLS308
                time.sleep(0.5 * (rank % 8))  # ruleid: MLS307
        top1, vloss = evaluate(ddp, val_dl, args.seed)  # ruleid: MLS301
        ema_top1, _ = evaluate(ema.module, val_dl, args.seed)  # ruleid: MLS301
        if rank == 0:  # ok: MLS308
            stats = {"train/loss": running / len(train_dl), "val/top1": max(top1, ema_top1), "val/loss": vloss,  # ruleid: MLS306
                     "feat/std": feat_stats.std, "epoch": epoch, "epoch_time": time.time() - t0}
            for k, v in stats.items():
                writer.add_scalar(k, v, epoch)
            with open(os.path.join(args.output, "log.jsonl"), "a") as fh:
                fh.write(json.dumps(stats) + "\n")
            if args.wandb:
                wandb.log(stats)
        if max(top1, ema_top1) > best_top1:
            best_top1, stale = max(top1, ema_top1), 0
            save("model_best.pth", epoch)
        else:
            stale += 1
        save(f"checkpoint-{epoch:03d}.pth", epoch)
        if rank == 0:
            prune_checkpoints(args.output)
        if world_size > 1:
            dist.barrier()  # ok: MLS307
        if stale >= args.patience:
            break  # ok: MLS307
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
