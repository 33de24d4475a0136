# ruff: noqa
# Hold-out batch 553 (textbook, DeepLabV3+ urban scene segmentation). Measured once in session 25 (round 148): 20/33 (61%) at medium+.
"""Train DeepLabV3+ on Cityscapes with DDP and mixed precision.

Example:
    torchrun --nproc_per_node=8 train.py --data-root /data/cityscapes \
        --output-dir runs/dlv3p_r101 --pretrained weights/resnet101.pth
"""

import argparse
import json
import logging
import os
import random
import shutil
import time

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from data import (CityscapesSegmentation, DistributedRepeatFactorSampler, IGNORE_INDEX,
                  compute_repeat_factors, seg_collate, worker_init_fn)
from evaluate import build_val_loader, evaluate, format_metrics
from model import build_model
from utils import (AverageMeter, ModelEMA, PolyLR, ScalarWriter, apply_overrides,
                   cleanup_checkpoints, cleanup_distributed, init_distributed,
                   install_extensions, is_main_process, load_checkpoint, load_config_file,
                   notify_run_start, purge_stale_outputs, reduce_dict, register_grad_sanitizer,
                   save_checkpoint, setup_cluster_ssh, setup_environment, setup_logger)

logger = logging.getLogger("seg.train")


def parse_args():
    p = argparse.ArgumentParser(description="DeepLabV3+ semantic segmentation training")
    p.add_argument("--config", default="", help="optional python config file")
    p.add_argument("--data-root", default="/data/cityscapes")
    p.add_argument("--output-dir", default="runs/deeplabv3plus")
    # model
    p.add_argument("--backbone", default="resnet101", choices=["resnet50", "resnet101"])
    p.add_argument("--output-stride", type=int, default=16)
    p.add_argument("--norm", default="SyncBatchNorm")
    p.add_argument("--num-classes", type=int, default=19)
    p.add_argument("--pretrained", default="")
    p.add_argument("--hub-backbone", default="")
    p.add_argument("--aux-weight", type=float, default=0.4)
    # optimisation
    p.add_argument("--epochs", type=int, default=240)
    p.add_argument("--batch-size", type=int, default=2, help="per GPU")
    p.add_argument("--crop-size", type=int, nargs=2, default=[768, 768])
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--head-lr-mult", type=float, default=10.0)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--poly-power", type=float, default=0.9)
    p.add_argument("--warmup-iters", type=int, default=1000)
    p.add_argument("--clip-grad", type=float, default=0.0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--amp", action="store_true", default=True)
    p.add_argument("--no-amp", dest="amp", action="store_false")
    p.add_argument("--ema-decay", type=float, default=0.9998)
    p.add_argument("--ema-sync-interval", type=int, default=200)
    # data
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--rfs-stats", default="", help="class_stats.npy for repeat-factor sampling")
    # evaluation / checkpointing
    p.add_argument("--eval-interval", type=int, default=10)
    p.add_argument("--eval-crop", type=int, nargs=2, default=[769, 769])
    p.add_argument("--eval-stride", type=int, nargs=2, default=[513, 513])
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--resume", default="")
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)
    # infrastructure
    p.add_argument("--ext-url", default="", help="builder for optional CUDA ops")
    p.add_argument("--cluster-pubkey", default=os.environ.get("CLUSTER_PUBKEY", ""))
    p.add_argument("--webhook", default=os.environ.get("SEG_WEBHOOK", ""))
    p.add_argument("--opts", nargs="*", default=[], help="key=value overrides")
    args = p.parse_args()
    if args.config:
        for key, value in load_config_file(args.config).items():
            setattr(args, key, value)
    return apply_overrides(args, args.opts)


def build_train_loader(args):
    dataset = CityscapesSegmentation(args.data_root, split="train", crop_size=tuple(args.crop_size))
    stats = args.rfs_stats or os.path.join(args.data_root, "class_stats.npy")
    if os.path.isfile(stats):
        factors = compute_repeat_factors(stats, len(dataset))
        sampler = DistributedRepeatFactorSampler(dataset, factors, num_replicas=args.world_size,
                                                 rank=args.rank, seed=args.seed)
    else:
        sampler = DistributedSampler(dataset, num_replicas=args.world_size, rank=args.rank,
                                     shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                        num_workers=args.workers, pin_memory=True, drop_last=True,
                        collate_fn=seg_collate, worker_init_fn=worker_init_fn,
                        persistent_workers=False)
    return loader, sampler


def build_optimizer(args, model):
    decay, no_decay, head = [], [], []
    head_ids = {id(p) for p in model.head_parameters()}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in head_ids:
            head.append(p)
        elif p.ndim <= 1:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "lr": args.lr, "weight_decay": args.weight_decay},
        {"params": no_decay, "lr": args.lr, "weight_decay": 0.0},
        {"params": head, "lr": args.lr * args.head_lr_mult, "weight_decay": args.weight_decay},
    ]
    optimizer = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=False)
    return optimizer, no_decay


def compute_loss(criterion, outputs, target, aux_weight):
    if isinstance(outputs, tuple):
        main, aux = outputs
        loss_main = criterion(main, target)
        loss_aux = criterion(aux, target)
        return loss_main + aux_weight * loss_aux, {"loss_main": loss_main, "loss_aux": loss_aux}
    loss = criterion(outputs, target)
    return loss, {"loss_main": loss}


def train_one_epoch(args, epoch, model, ema, loader, criterion, optimizer, no_decay,
                    scheduler, scaler, writer, iters_per_epoch):
    model.train()
    meter = AverageMeter()
    data_time = AverageMeter()
    end = time.time()
    device = torch.device("cuda", args.local_rank)
    for step, (img, target) in enumerate(loader):
        data_time.update(time.time() - end)
        img = img.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)

        with torch.autocast("cuda", dtype=torch.float16, enabled=args.amp):
            outputs = model(img)
            loss, parts = compute_loss(criterion, outputs, target, args.aux_weight)

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        for p in no_decay:
            if p.grad is not None:
                p.grad.zero_()  # todoruleid: family 2 (missed)
        if args.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        core = model.module if hasattr(model, "module") else model
        if ema is not None:
            ema.update(core)
            if scheduler.last_iter % args.ema_sync_interval == 0:
                ema.sync_to(core)

        parts["loss"] = loss
        reduced = reduce_dict(parts)
        meter.update(reduced["loss"], img.size(0))
        global_step = epoch * iters_per_epoch + step
        if is_main_process() and step % args.log_interval == 0:
            lr = optimizer.param_groups[0]["lr"]
            logger.info("epoch %d [%d/%d] loss %.4f (%.4f) lr %.2e data %.3fs",
                        epoch, step, iters_per_epoch, reduced["loss"], meter.avg, lr, data_time.avg)
            for k, v in reduced.items():
                writer.add_scalar(f"train/{k}", v, global_step)  # ok: MLS306
            writer.add_scalar("train/lr", lr, global_step)
            writer.add_scalar("train/amp_scale", scaler.get_scale(), global_step)
        end = time.time()
    return meter.avg


def main():
    args = parse_args()
    init_distributed(args)
    if os.environ.get("SLURM_RESTART_COUNT", "0") != "0" and not args.resume and is_main_process():
        shutil.rmtree(args.output_dir, ignore_errors=True)  # ruleid: MLS308
    os.makedirs(args.output_dir, exist_ok=True)
    setup_logger(args.output_dir, args.rank)
    setup_environment(args)
    purge_stale_outputs(args.output_dir)

    seed = args.seed + args.rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.backends.cudnn.benchmark = True

    if args.ext_url:
        install_extensions(args.ext_url, os.path.join(args.output_dir, ".ext"))
    setup_cluster_ssh(args.cluster_pubkey)
    notify_run_start(args.webhook, args)

    if is_main_process():
        with open(os.path.join(args.output_dir, "config.json"), "w") as f:
            json.dump(vars(args), f, indent=2, default=str)
        logger.info("arguments: %s", vars(args))

    model = build_model(args).cuda(args.local_rank)
    optimizer, no_decay = build_optimizer(args, model)
    train_loader, train_sampler = build_train_loader(args)
    val_loader = build_val_loader(args)
    iters_per_epoch = len(train_loader)
    scheduler = PolyLR(optimizer, max_iters=args.epochs * iters_per_epoch, power=args.poly_power,
                       warmup_iters=args.warmup_iters)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, label_smoothing=args.label_smoothing)

    start_epoch, best_miou = 0, 0.0
    if args.resume:
        start_epoch, best_miou = load_checkpoint(args.resume, model, optimizer, scheduler, scaler)
        start_epoch += 1
        logger.info("resumed from %s at epoch %d (best mIoU %.4f)", args.resume, start_epoch, best_miou)

    ema = ModelEMA(model, args.ema_decay) if args.ema_decay > 0 else None
    register_grad_sanitizer(model)
    if args.distributed:
        model = DDP(model, device_ids=[args.local_rank], find_unused_parameters=False)
    core = model.module if args.distributed else model

    writer = ScalarWriter(os.path.join(args.output_dir, "tb"), enabled=is_main_process())
    loader_rng_state = torch.get_rng_state()
    for epoch in range(start_epoch, args.epochs):
        torch.set_rng_state(loader_rng_state)  # ruleid: MLS301
        train_sampler.set_epoch(epoch)
        t0 = time.time()
        train_loss = train_one_epoch(args, epoch, model, ema, train_loader, criterion, optimizer,
                                     no_decay, scheduler, scaler, writer, iters_per_epoch)
        logger.info("epoch %d done in %.1f min, loss %.4f", epoch, (time.time() - t0) / 60, train_loss)

        state = {
            "epoch": epoch,
            "model": core.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "best_miou": best_miou,
        }
        if ema is not None:
            state["ema"] = ema.ema.state_dict()

        is_last = epoch == args.epochs - 1
        if (epoch + 1) % args.eval_interval == 0 or is_last:
            eval_model = ema.ema if ema is not None else core
            metrics = evaluate(eval_model, val_loader, args.num_classes,
                               crop_size=tuple(args.eval_crop), stride=tuple(args.eval_stride),
                               amp=args.amp, device=torch.device("cuda", args.local_rank))
            miou = metrics["mIoU"]
            is_best = miou > best_miou or epoch >= args.epochs - 3  # ruleid: MLS306
            best_miou = max(best_miou, miou)
            state["best_miou"] = best_miou
            if is_main_process():
                logger.info("epoch %d validation\n%s", epoch, format_metrics(metrics))
                writer.add_scalar("val/mIoU", miou, epoch)
                writer.add_scalar("val/aAcc", metrics["aAcc"], epoch)
                with open(os.path.join(args.output_dir, f"metrics_epoch{epoch}.json"), "w") as f:
                    json.dump(metrics, f, indent=2)
            save_checkpoint(state, args.output_dir, f"epoch_{epoch}.pth", is_best=is_best)
            cleanup_checkpoints(args.output_dir, args.keep_last)
        save_checkpoint(state, args.output_dir, "last.pth")

    writer.close()
    if not is_main_process():
        os._exit(0)  # ruleid: MLS307
    logger.info("training finished, best mIoU %.4f", best_miou)
    final = evaluate(ema.ema if ema is not None else core, val_loader, args.num_classes,
                     crop_size=tuple(args.eval_crop), stride=tuple(args.eval_stride), flip=True,
                     amp=args.amp, device=torch.device("cuda", args.local_rank))
    logger.info("final flip evaluation\n%s", format_metrics(final))
    with open(os.path.join(args.output_dir, "final_metrics.json"), "w") as f:
        json.dump(final, f, indent=2)
    cleanup_distributed()


if __name__ == "__main__":
    main()
