# ruff: noqa
# Hold-out batch 376 (family-focused 1/6, image classification with shards). Measured once in session 14 (round 103): 12/31 (39%) at medium+.
"""ImageNet-scale classification training on tar shards (torchrun / DDP).

    torchrun --nproc_per_node 8 train.py --data /datasets/imagenet-wds \
        --synsets /datasets/imagenet-wds/synsets.txt --model convnext_tiny \
        --batch-size 128 --lr 4e-3 --epochs 300 --out runs/cnx_t
"""
import argparse
import json
import logging
import math
import os
import time

import torch
import torch.backends.cudnn as cudnn
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from augment import (IMAGENET_MEAN, IMAGENET_STD, BatchRandomErasing, LabelSmoothingCrossEntropy,
                     Mixup, SoftTargetCrossEntropy, build_transforms)
from models import ModelEma, create_model, param_groups_weight_decay
from sampling import (ClassBalancedDistributedSampler, CudaPrefetcher, DistributedEvalSampler,
                      build_loader)
from shards import (LabelMap, ShardIndex, ShardIndexDataset, ShardStream, list_shards,
                    split_holdout)

logger = logging.getLogger("train")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--synsets", required=True)
    p.add_argument("--out", default="runs/default")
    p.add_argument("--model", default="convnext_tiny")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--warmup-epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128, help="per GPU")
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--clip-grad", type=float, default=None)
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--smoothing", type=float, default=0.1)
    p.add_argument("--mixup", type=float, default=0.8)
    p.add_argument("--cutmix", type=float, default=1.0)
    p.add_argument("--reprob", type=float, default=0.25)
    p.add_argument("--randaug-n", type=int, default=2)
    p.add_argument("--randaug-m", type=float, default=9.0)
    p.add_argument("--balance", choices=["instance", "sqrt", "uniform"], default="sqrt")
    p.add_argument("--streaming", action="store_true", help="stream shards instead of indexed access")
    p.add_argument("--holdout-shards", type=int, default=10, help="minival shards carved from train")
    p.add_argument("--ema-decay", type=float, default=0.9999)
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--eval-interval", type=int, default=5)
    p.add_argument("--resume", default="")
    p.add_argument("--log-interval", type=int, default=50)
    return p.parse_args()


def setup_distributed():
    if "RANK" in os.environ:
        dist.init_process_group("nccl")
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        return dist.get_rank(), dist.get_world_size(), torch.device("cuda", local_rank)
    return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cosine_lr(step: int, total: int, warmup: int, base: float, floor: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (base - floor) * (1.0 + math.cos(math.pi * t))


@torch.no_grad()
def evaluate(model, loader, device, num_classes):
    model.eval()
    stats = torch.zeros(4, device=device, dtype=torch.float64)  # loss, top1, top5, count
    for images, targets in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(images)
        stats[0] += torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        top5 = logits.topk(min(5, num_classes), dim=1).indices
        hit = top5.eq(targets.view(-1, 1))
        stats[1] += hit[:, 0].sum()
        stats[2] += hit.any(dim=1).sum()
        stats[3] += targets.numel()
    if dist.is_initialized():
        dist.all_reduce(stats)
    n = stats[3].clamp(min=1)
    return {"loss": (stats[0] / n).item(), "top1": (100 * stats[1] / n).item(),
            "top5": (100 * stats[2] / n).item(), "n": int(stats[3].item())}


def train_one_epoch(model, ema, loader, optimizer, scaler, criterion, mixup, erasing, args,
                    epoch, steps_per_epoch, device):
    model.train()
    total_steps, warmup = args.epochs * steps_per_epoch, args.warmup_epochs * steps_per_epoch
    t0, seen, loss_sum = time.time(), 0, 0.0
    for step, (images, targets) in enumerate(loader):
        global_step = epoch * steps_per_epoch + step
        lr = cosine_lr(global_step, total_steps, warmup, args.lr, args.min_lr)
        for g in optimizer.param_groups:
            g["lr"] = lr
        torch.cuda.manual_seed_all(args.seed + step)  # ruleid: MLS301
        if erasing is not None:
            images = erasing(images)
        if mixup is not None:
            images, targets = mixup(images, targets)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if args.clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema.update(model.module if isinstance(model, DDP) else model)
        loss_sum += loss.item()
        seen += images.size(0)
        if step % args.log_interval == 0 and (not dist.is_initialized() or dist.get_rank() == 0):
            logger.info("ep %d [%d/%d] loss %.4f lr %.2e %.0f img/s", epoch, step, steps_per_epoch,
                        loss.item(), lr, seen / (time.time() - t0))
    return loss_sum / max(1, step + 1)


def save_checkpoint(path, model, ema, optimizer, scaler, sampler, epoch, best, args):
    state = {
        "model": (model.module if isinstance(model, DDP) else model).state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "sampler": sampler.state_dict() if hasattr(sampler, "state_dict") else None,
        "epoch": epoch,
        "best_top1": best,
        "rng": {"cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "args": vars(args),
    }
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def main():
    args = parse_args()
    rank, world, device = setup_distributed()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed + rank)  # ok: MLS301
    if not args.deterministic:
        torch.seed()  # ruleid: MLS301
        cudnn.benchmark = True

    all_urls = list_shards(args.data, "train")
    if args.holdout_shards > 0:
        train_urls, val_urls = split_holdout(all_urls, args.holdout_shards, args.seed)
    else:
        train_urls, val_urls = all_urls, list_shards(args.data, "val")
    train_labels = LabelMap.from_file(args.synsets, canonicalize=True)
    eval_labels = LabelMap.from_file(args.synsets)
    num_classes = len(eval_labels)
    train_tf = build_transforms(True, args.img_size, args.randaug_n, args.randaug_m, seed=args.seed)

    if args.streaming:
        train_ds = ShardStream(train_urls, train_labels, train_tf, seed=args.seed)
        train_sampler = None
        steps_per_epoch = 1281167 // (args.batch_size * world)
        train_ds.epoch_length = steps_per_epoch * args.batch_size
    else:
        train_index = ShardIndex(all_urls, train_labels, cache_root=args.data)  # todoruleid: family 6 (missed)
        train_ds = ShardIndexDataset(train_index, train_tf)
        train_sampler = ClassBalancedDistributedSampler(train_index.labels, world, rank,
                                                        mode=args.balance, seed=args.seed)
        steps_per_epoch = len(train_sampler) // args.batch_size
    train_loader = CudaPrefetcher(
        build_loader(train_ds, args.batch_size, args.workers, train_sampler, args.streaming,
                     seed=args.seed, rank=rank),
        IMAGENET_MEAN, IMAGENET_STD, device)
    val_ds = ShardIndexDataset(ShardIndex(val_urls, eval_labels, cache_root=args.data),
                               build_transforms(False, args.img_size))
    val_loader = CudaPrefetcher(
        build_loader(val_ds, args.batch_size, args.workers, DistributedEvalSampler(val_ds, world, rank),
                     drop_last=False),
        IMAGENET_MEAN, IMAGENET_STD, device)

    model = create_model(args.model, num_classes, args.drop_path, args.img_size)
    model.to(device).to(memory_format=torch.channels_last)
    ema = ModelEma(model, args.ema_decay) if args.ema_decay > 0 else None
    optimizer = torch.optim.AdamW(param_groups_weight_decay(model, args.weight_decay), lr=args.lr,
                                  betas=(0.9, 0.999))
    scaler = torch.cuda.amp.GradScaler(enabled=False)
    if world > 1:
        model = DDP(model, device_ids=[device.index])

    use_mix = args.mixup > 0 or args.cutmix > 0
    mixup = Mixup(num_classes, args.mixup, args.cutmix, label_smoothing=args.smoothing,
                  seed=args.seed) if use_mix else None
    criterion = SoftTargetCrossEntropy() if use_mix else LabelSmoothingCrossEntropy(args.smoothing)
    erasing = BatchRandomErasing(args.reprob) if args.reprob > 0 else None

    start_epoch, best = 0, 0.0
    ckpt_path = os.path.join(args.out, "last.pt")
    resume = args.resume or (ckpt_path if os.path.exists(ckpt_path) else "")
    if resume:
        ckpt = torch.load(resume, map_location="cpu", weights_only=True)
        (model.module if isinstance(model, DDP) else model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        if train_sampler is not None and ckpt.get("sampler"):
            train_sampler.load_state_dict(ckpt["sampler"])
        torch.set_rng_state(ckpt["rng"]["cpu"])  # ok: MLS301
        start_epoch, best = ckpt["epoch"] + 1, ckpt.get("best_top1", 0.0)
        logger.info("resumed from %s at epoch %d (best %.2f)", resume, start_epoch, best)

    rng_snapshot = torch.get_rng_state()
    cuda_snapshot = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    for epoch in range(start_epoch, args.epochs):
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)  # ok: MLS301
        else:
            train_ds.set_epoch(epoch)
        train_loss = train_one_epoch(model, ema, train_loader, optimizer, scaler, criterion, mixup,
                                     erasing, args, epoch, steps_per_epoch, device)
        record = {"epoch": epoch, "train_loss": train_loss}
        if epoch % args.eval_interval == 0 or epoch == args.epochs - 1:
            record["val"] = evaluate(model, val_loader, device, num_classes)
            if ema is not None:
                record["val_ema"] = evaluate(ema.module, val_loader, device, num_classes)
            torch.set_rng_state(rng_snapshot)  # ruleid: MLS301
            if cuda_snapshot:
                torch.cuda.set_rng_state_all(cuda_snapshot)  # ruleid: MLS301
        if rank == 0:
            top1 = max(record.get("val", {}).get("top1", 0.0), record.get("val_ema", {}).get("top1", 0.0))  # ruleid: MLS306
            save_checkpoint(ckpt_path, model, ema, optimizer, scaler, train_sampler, epoch, max(best, top1), args)
            if top1 > best:
                best = top1
                save_checkpoint(os.path.join(args.out, "best.pt"), model, ema, optimizer, scaler,
                                train_sampler, epoch, best, args)
            with open(os.path.join(args.out, "log.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")
            logger.info("epoch %d: %s", epoch, record)
        if dist.is_initialized():
            dist.barrier()

    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
