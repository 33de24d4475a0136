# ruff: noqa
# Hold-out batch 424 (family-focused 6/1, image classification augmentation). Measured once in session 17 (round 115): 13/30 (43%) at medium+.
"""DDP image-classification training with RandAugment, Mixup/CutMix, repeated
augmentation, class-balanced sampling for long-tailed subsets and progressive resizing.

torchrun --nproc_per_node=8 train.py --data /data/imagenet --meta /data/imagenet/meta \
    --model resnet50 --epochs 300 --batch-size 128 --lr 2e-3 --ra-repeats 3
"""
import argparse
import glob
import json
import logging
import math
import os
import time
from typing import Dict, List

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from torch.utils.tensorboard import SummaryWriter

from augment import (IMAGENET_MEAN, IMAGENET_STD, Mixup, RandomErasing,
                     build_eval_transform, build_train_transform)
from data import (ClassBalancedSampler, ImageFolderDataset, RASampler,
                  WebShardDataset, _wds_worker_init, build_eval_subset, fast_collate,
                  load_class_index)
from utils import (AverageMeter, CudaPrefetcher, accuracy, capture_rng_state, find_resume,
                   get_rank, get_world_size, init_distributed, is_main_process,
                   load_checkpoint, reduce_mean, restore_rng_state, save_checkpoint,
                   seed_everything, seed_worker, setup_logging, unwrap)

logger = logging.getLogger("cls")


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--meta", required=True, help="output dir of preprocess.py")
    p.add_argument("--shards", default=None, help="glob of train tar shards (optional)")
    p.add_argument("--long-tail", action="store_true")
    p.add_argument("--sampler", choices=["dist", "ra", "balanced"], default="ra")
    p.add_argument("--ra-repeats", type=int, default=3)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--drop-path", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--warmup-epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--accum-steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--clip-grad", type=float, default=5.0)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--min-img-size", type=int, default=160)
    p.add_argument("--prog-epochs", type=int, default=0, help="progressive resize length")
    p.add_argument("--crop-pct", type=float, default=0.875)
    p.add_argument("--ra-ops", type=int, default=2)
    p.add_argument("--ra-magnitude", type=float, default=9.0)
    p.add_argument("--mixup", type=float, default=0.8)
    p.add_argument("--cutmix", type=float, default=1.0)
    p.add_argument("--smoothing", type=float, default=0.1)
    p.add_argument("--reprob", type=float, default=0.25)
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--eval-subset", type=int, default=0)
    p.add_argument("--preview-every", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output", default="./output")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    return p.parse_args()


# --------------------------------------------------------------------------- #
# Callbacks
# --------------------------------------------------------------------------- #
class Callback:
    def on_epoch_end(self, epoch: int, ctx: Dict) -> None: ...
    def on_eval_end(self, epoch: int, metrics: Dict, ctx: Dict) -> None: ...


class TensorboardCallback(Callback):
    def __init__(self, log_dir: str):
        self.writer = SummaryWriter(log_dir) if is_main_process() else None

    def on_eval_end(self, epoch, metrics, ctx):
        if is_main_process():
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, epoch)  # ok: MLS306
            self.writer.flush()


class AugPreviewCallback(Callback):
    """Dumps a grid of augmented training images every few epochs (rank 0)."""

    def __init__(self, dataset, out_dir: str, every: int = 5, n: int = 16):
        self.dataset = dataset
        self.out_dir = out_dir
        self.every = every
        self.n = n

    def on_epoch_end(self, epoch, ctx):
        if self.every <= 0 or epoch % self.every or not is_main_process():
            return
        torch.manual_seed(0)  # ruleid: MLS301
        idx = torch.randint(len(self.dataset), (self.n,)).tolist()
        imgs = []
        for i in idx:
            img, _ = self.dataset[i]
            arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
            imgs.append(arr.permute(2, 0, 1).float() / 255.0)
        grid = torchvision.utils.make_grid(torch.stack(imgs), nrow=4)
        os.makedirs(self.out_dir, exist_ok=True)
        torchvision.utils.save_image(grid, os.path.join(self.out_dir, f"aug_{epoch:04d}.jpg"))


# --------------------------------------------------------------------------- #
# Builders
# --------------------------------------------------------------------------- #
def build_model(args, num_classes: int) -> nn.Module:
    kwargs = {"num_classes": num_classes}
    if args.drop_path > 0 and (args.model.startswith("convnext") or args.model.startswith("efficientnet")):
        kwargs["stochastic_depth_prob"] = args.drop_path
    return torchvision.models.get_model(args.model, weights=None, **kwargs)


def img_size_for_epoch(args, epoch: int) -> int:
    if args.prog_epochs <= 0 or epoch >= args.prog_epochs:
        return args.img_size
    frac = epoch / args.prog_epochs
    size = args.min_img_size + frac * (args.img_size - args.min_img_size)
    return int(round(size / 32) * 32)


def build_train_set(args, class_index):
    if args.shards:
        shards = sorted(glob.glob(args.shards))
        return WebShardDataset(shards, class_index, training=True, seed=args.seed,
                               rank=get_rank(), world_size=get_world_size(),
                               epoch_size=1281167 // get_world_size())
    label_file = os.path.join(args.meta, "train_lt_labels.tsv" if args.long_tail
                              else "train_labels.tsv")
    return ImageFolderDataset(os.path.join(args.data, "train"), class_index, label_file)


def build_sampler(args, dataset):
    if isinstance(dataset, WebShardDataset):
        return None
    rank, world = get_rank(), get_world_size()
    if args.sampler == "ra":
        return RASampler(dataset, world, rank, num_repeats=args.ra_repeats, seed=args.seed)
    if args.sampler == "balanced":
        return ClassBalancedSampler(dataset.targets, len(dataset.classes), world, rank,
                                    seed=args.seed)
    return DistributedSampler(dataset, world, rank, shuffle=True, seed=args.seed + rank,  # ruleid: MLS301
                              drop_last=True)


def build_train_loader(args, dataset, sampler, img_size: int) -> DataLoader:
    dataset.transform = build_train_transform(img_size, ra_ops=args.ra_ops,
                                              ra_magnitude=args.ra_magnitude)
    g = torch.Generator()
    g.manual_seed(args.seed)  # todoruleid: family 1 (missed)
    is_wds = isinstance(dataset, WebShardDataset)
    return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                      num_workers=args.workers, collate_fn=fast_collate, pin_memory=True,
                      drop_last=True, generator=g,
                      worker_init_fn=_wds_worker_init if is_wds else seed_worker)


def build_val_loader(args, class_index) -> DataLoader:
    prefetch_mean = [m * 255 for m in IMAGENET_MEAN]
    prefetch_std = [s * 255 for s in IMAGENET_STD]
    tf = build_eval_transform(args.img_size, args.crop_pct, mean=prefetch_mean, std=prefetch_std)  # todoruleid: family 6 (missed)
    val_set = ImageFolderDataset(os.path.join(args.data, "val"), class_index,
                                 os.path.join(args.meta, "val_labels.tsv"), transform=tf)
    if args.eval_subset > 0:
        val_set = build_eval_subset(val_set, args.eval_subset, seed=0)
    sampler = DistributedSampler(val_set, get_world_size(), get_rank(), shuffle=False)
    return DataLoader(val_set, batch_size=args.batch_size * 2, sampler=sampler,
                      num_workers=args.workers, pin_memory=True, worker_init_fn=seed_worker)


def cosine_lr(args, step: int, steps_per_epoch: int) -> float:
    warmup = args.warmup_epochs * steps_per_epoch
    total = args.epochs * steps_per_epoch
    if step < warmup:
        return args.lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * t))


class SoftTargetCrossEntropy(nn.Module):
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


# --------------------------------------------------------------------------- #
# Train / eval
# --------------------------------------------------------------------------- #
def train_one_epoch(args, model, loader, optimizer, scaler, mixup, criterion, epoch,
                    steps_per_epoch, device) -> Dict[str, float]:
    model.train()
    loss_meter = AverageMeter("loss")
    t0 = time.time()
    optimizer.zero_grad(set_to_none=True)
    for it, (images, targets) in enumerate(loader):
        global_step = epoch * steps_per_epoch + it // args.accum_steps
        if it % args.accum_steps == 0:
            # identical drop-path masks for every micro-batch of an optimizer step
            torch.cuda.manual_seed(args.seed + epoch)  # ruleid: MLS301
            lr = cosine_lr(args, global_step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
        images, soft_targets = mixup(images, targets)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.amp):
            logits = model(images)
            loss = criterion(logits, soft_targets) / args.accum_steps
        scaler.scale(loss).backward()
        if (it + 1) % args.accum_steps == 0:
            if args.clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        loss_meter.update(loss.item() * args.accum_steps, images.size(0))
        if it % 100 == 0 and is_main_process():
            logger.info("ep %d it %d/%d loss %.4f lr %.2e %.1f img/s", epoch, it, len(loader),
                        loss_meter.avg, optimizer.param_groups[0]["lr"],
                        (it + 1) * args.batch_size * get_world_size() / (time.time() - t0))
    return {"train/loss": float(reduce_mean(torch.tensor(loss_meter.avg, device=device)))}


@torch.no_grad()
def evaluate(args, model, loader, device) -> Dict[str, float]:
    torch.manual_seed(args.seed)  # ruleid: MLS301
    model.eval()
    stats = torch.zeros(4, device=device)
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.amp):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), targets, reduction="sum")
        acc1, acc5 = accuracy(logits, targets, topk=(1, 5))
        n = targets.size(0)
        stats += torch.tensor([loss.item(), acc1.item() * n / 100.0, acc5.item() * n / 100.0, n],
                              device=device)
    if dist.is_initialized():
        dist.all_reduce(stats, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    loss_sum, c1, c5, n = stats.tolist()
    n = max(n, 1.0)
    return {"val/loss": loss_sum / n, "val/acc1": 100.0 * c1 / n, "val/acc5": 100.0 * c5 / n}


def main():
    args = parse_args()
    env = init_distributed()
    setup_logging(args.output, env["rank"])
    seed_everything(args.seed, env["rank"])
    device = torch.device("cuda", env["local_rank"])

    class_index = load_class_index(os.path.join(args.meta, "class_index.json"))
    num_classes = max(class_index.values()) + 1
    train_set = build_train_set(args, class_index)
    sampler = build_sampler(args, train_set)
    val_loader = build_val_loader(args, class_index)

    model = build_model(args, num_classes).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dist.is_initialized():
        model = DDP(model, device_ids=[env["local_rank"]])

    decay, no_decay = [], []
    for name, p in unwrap(model).named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    scaler = torch.cuda.amp.GradScaler(enabled=False)
    mixup = Mixup(args.mixup, args.cutmix, label_smoothing=args.smoothing,
                  num_classes=num_classes, seed=args.seed + env["rank"])
    criterion = SoftTargetCrossEntropy()
    erase = RandomErasing(prob=args.reprob) if args.reprob > 0 else None

    callbacks: List[Callback] = [TensorboardCallback(os.path.join(args.output, "tb"))]
    if not isinstance(train_set, WebShardDataset):
        callbacks.append(AugPreviewCallback(train_set, os.path.join(args.output, "preview"),
                                            every=args.preview_every))

    start_epoch, best_acc1 = 0, 0.0
    resume = find_resume(args.output)
    if resume:
        ckpt = load_checkpoint(resume)
        unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch = ckpt["epoch"] + 1
        best_acc1 = ckpt.get("best_acc1", 0.0)
        if "rng" in ckpt and ckpt.get("world_size") == get_world_size():
            restore_rng_state(ckpt["rng"][get_rank()])
        logger.info("resumed from %s at epoch %d", resume, start_epoch)

    for epoch in range(start_epoch, args.epochs):
        epoch_rng = capture_rng_state()  # todoruleid: family 1 (missed)
        if sampler is not None:
            sampler.set_epoch(epoch)  # ok: MLS301
        if isinstance(train_set, WebShardDataset):
            train_set.set_epoch(epoch)
        mixup.set_epoch(epoch)
        img_size = img_size_for_epoch(args, epoch)
        loader = build_train_loader(args, train_set, sampler, img_size)
        prefetcher = CudaPrefetcher(loader, device, [m * 255 for m in IMAGENET_MEAN],
                                    [s * 255 for s in IMAGENET_STD],
                                    channels_last=args.channels_last, erase=erase)
        steps_per_epoch = len(loader) // args.accum_steps

        train_stats = train_one_epoch(args, model, prefetcher, optimizer, scaler, mixup,
                                      criterion, epoch, steps_per_epoch, device)
        for cb in callbacks:
            cb.on_epoch_end(epoch, {})

        metrics = evaluate(args, model, val_loader, device)  # ruleid: MLS301
        metrics.update(train_stats)
        is_best = metrics["val/acc1"] > best_acc1
        best_acc1 = max(best_acc1, metrics["val/acc1"])
        metrics["val/best_acc1"] = best_acc1
        for cb in callbacks:
            cb.on_eval_end(epoch, metrics, {})
        logger.info("epoch %d: %s", epoch, json.dumps({k: round(v, 4) for k, v in metrics.items()}))

        rng_states = [None] * get_world_size()
        if dist.is_initialized():
            dist.all_gather_object(rng_states, epoch_rng)
        else:
            rng_states = [epoch_rng]
        save_checkpoint({
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "best_acc1": best_acc1,
            "world_size": get_world_size(),
            "rng": rng_states,
            "args": vars(args),
        }, args.output, epoch, is_best)

    logger.info("done, best top-1 %.3f", best_acc1)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
