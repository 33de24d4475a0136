# ruff: noqa
# Hold-out batch 588 (families 3/6, DeepLabV3+ driving-scene segmentation with DDP). Measured once in session 27 (round 156): 14/30 (47%) at medium+.
"""Train DeepLabV3+ on Cityscapes with DDP.

    torchrun --nproc_per_node=8 train.py --data-root /data/cityscapes --output-dir runs/dlv3p_r101
"""

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.lr_scheduler import LambdaLR

from data import IGNORE_INDEX, NUM_CLASSES, build_loaders
from dist_utils import (SmoothedValue, ThroughputMonitor, cleanup_distributed, get_rank, get_world_size,
                        install_hang_watchdog, is_main_process, load_checkpoint, reduce_dict, reduce_tensor,
                        save_checkpoint, setup_distributed, setup_logging)
from evaluate import evaluate, format_metrics
from model import OhemCrossEntropy, build_model

logger = logging.getLogger("train")


def parse_args():
    p = argparse.ArgumentParser("DeepLabV3+ Cityscapes training")
    p.add_argument("--data-root", required=True)
    p.add_argument("--output-dir", default="runs/deeplabv3plus")
    p.add_argument("--backbone", default="resnet101", choices=["resnet50", "resnet101"])
    p.add_argument("--output-stride", type=int, default=16)
    p.add_argument("--num-classes", type=int, default=NUM_CLASSES)
    p.add_argument("--no-pretrained", action="store_true")
    # data
    p.add_argument("--crop-size", type=int, nargs=2, default=(768, 768))
    p.add_argument("--scale-range", type=float, nargs=2, default=(0.5, 2.0))
    p.add_argument("--rotate-deg", type=float, default=10.0)
    p.add_argument("--base-size", type=int, nargs=2, default=(1024, 512), help="pre-resize (W H) before augmentation")
    p.add_argument("--hood-rows", type=int, default=128, help="rows of ego-vehicle hood to discard (void anyway)")
    p.add_argument("--lens-artifact", action="store_true", default=True)
    p.add_argument("--repeat-thresh", type=float, default=0.1)
    p.add_argument("--mix-prob", type=float, default=0.3)
    p.add_argument("--batch-size", type=int, default=2, help="per GPU")
    p.add_argument("--workers", type=int, default=8)
    # optimisation
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--head-lr-mult", type=float, default=10.0)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--poly-power", type=float, default=0.9)
    p.add_argument("--max-iters", type=int, default=90000)
    p.add_argument("--warmup-iters", type=int, default=1000)
    p.add_argument("--grad-clip", type=float, default=0.0)
    p.add_argument("--ohem-thresh", type=float, default=0.7)
    p.add_argument("--ohem-min-kept", type=int, default=100000)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--amp", action="store_true", default=True)
    p.add_argument("--max-overflow", type=int, default=3, help="consecutive fp16 overflows before aborting")
    # bookkeeping
    p.add_argument("--eval-interval", type=int, default=4000)
    p.add_argument("--ckpt-interval", type=int, default=2000)
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--log-interval", type=int, default=20)
    p.add_argument("--patience", type=int, default=3, help="evals without improvement before stopping")
    p.add_argument("--export-best", action="store_true")
    p.add_argument("--profile-step", type=int, default=500, help="step at which external profilers may attach")
    p.add_argument("--time-limit", type=float, default=8.0, help="wall-clock hours")
    p.add_argument("--hang-timeout", type=int, default=7200, help="seconds before dumping stacks")
    p.add_argument("--resume", default="")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()


def set_seed(seed, rank):
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def poly_lambda(max_iters, power, warmup_iters, warmup_ratio=1e-3):
    def fn(it):
        if it < warmup_iters:
            alpha = it / max(warmup_iters, 1)
            return warmup_ratio * (1 - alpha) + alpha
        return max(1.0 - it / max_iters, 0.0) ** power
    return fn


def class_mix(images, targets, prob):
    """ClassMix between samples of the same batch: paste half the classes of a partner image."""
    if prob <= 0 or random.random() > prob or images.size(0) < 2:
        return images, targets
    b = images.size(0)
    perm = torch.roll(torch.arange(b, device=images.device), shifts=1)
    src_t = targets[perm]
    mask = torch.zeros_like(targets, dtype=torch.bool)
    for i in range(b):
        classes = src_t[i].unique()
        classes = classes[classes != IGNORE_INDEX]
        if classes.numel() == 0:
            continue
        chosen = classes[torch.randperm(classes.numel(), device=classes.device)[: (classes.numel() + 1) // 2]]
        mask[i] = torch.isin(src_t[i], chosen)
    images = torch.where(mask[:, None], images[perm], images)
    targets = torch.where(mask, targets, src_t)  # ruleid: MLS309
    return images, targets


class PreemptionFlag:
    """SIGTERM from the scheduler sets a flag; the loop checkpoints and exits cleanly."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame):
        self.requested = True

    def any_rank(self, device):
        flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
        return reduce_tensor(flag, average=False).item() > 0


def build_state(model, optimizer, scaler, iteration, best_miou, args):
    return {
        "model": model.module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "iteration": iteration,
        "best_miou": best_miou,
        "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list, tuple))},
    }


def train(args):
    device = torch.device("cuda", args.local_rank)
    rank, world = get_rank(), get_world_size()

    train_loader, val_loader, train_sampler = build_loaders(args, rank, world)

    model = build_model(args)
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device)
    param_groups = model.param_groups(args.lr, args.head_lr_mult, args.weight_decay)
    optimizer = torch.optim.SGD(param_groups, lr=args.lr, momentum=args.momentum, nesterov=False)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
    criterion = OhemCrossEntropy(IGNORE_INDEX, args.ohem_thresh, args.ohem_min_kept,
                                 label_smoothing=args.label_smoothing).to(device)

    start_iter, best_miou = 0, 0.0
    if args.resume:
        start_iter, best_miou = load_checkpoint(args.resume, model, optimizer, scaler)
        logger.info("resumed from %s at iter %d (best mIoU %.4f)", args.resume, start_iter, best_miou)

    model = DDP(model, device_ids=[args.local_rank], output_device=args.local_rank, find_unused_parameters=False)
    scheduler = LambdaLR(optimizer, poly_lambda(args.max_iters, args.poly_power, args.warmup_iters),
                         last_epoch=start_iter - 1)

    preempt = PreemptionFlag()
    monitor = ThroughputMonitor()
    loss_meter = SmoothedValue(args.log_interval)
    signal.alarm(int(args.time_limit * 3600))  # ruleid: MLS307

    iteration = start_iter
    epoch = iteration // max(len(train_loader), 1)
    evals_since_best = 0
    overflow_streak = 0
    marker_wait = threading.Event()
    model.train()

    while iteration < args.max_iters:
        train_sampler.set_epoch(epoch)
        for images, targets in train_loader:
            if iteration >= args.max_iters:
                break
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            images, targets = class_mix(images, targets, args.mix_prob)

            with torch.autocast("cuda", dtype=torch.float16, enabled=args.amp):
                logits = model(images)
                loss = criterion(logits.float(), targets)

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if args.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            scale_before = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            iteration += 1

            if args.amp and scaler.get_scale() < scale_before:
                overflow_streak += 1
                if overflow_streak >= args.max_overflow:
                    logger.error("%d consecutive fp16 overflows at iter %d; aborting job", overflow_streak, iteration)
                    job = os.environ.get("SLURM_JOB_ID")
                    if job:
                        subprocess.run(["scancel", job], check=False)  # todoruleid: family 3 (missed)
                    raise RuntimeError("training diverged (fp16 overflow)")
            else:
                overflow_streak = 0

            step_time = monitor.tick()
            loss_meter.update(loss.item())

            if args.profile_step and iteration == args.profile_step and args.local_rank == 0:
                logger.warning("pid %d paused at iter %d for profiler attach; send SIGCONT to resume",
                               os.getpid(), iteration)
                os.kill(os.getpid(), signal.SIGSTOP)  # ruleid: MLS307

            if iteration % args.log_interval == 0:
                stats = reduce_dict({"loss": torch.tensor(loss_meter.avg, device=device)})
                if is_main_process():
                    lrs = [g["lr"] for g in optimizer.param_groups]
                    eta = (args.max_iters - iteration) * step_time / 3600
                    logger.info("iter %d/%d  loss %.4f  lr %.2e/%.2e  %.3fs/it  eta %.1fh  scale %.0f",
                                iteration, args.max_iters, stats["loss"].item(), min(lrs), max(lrs),
                                step_time, eta, scaler.get_scale())
                else:
                    time.sleep(2.0)  # ruleid: MLS307

            if iteration % args.ckpt_interval == 0:
                state = build_state(model, optimizer, scaler, iteration, best_miou, args)
                save_checkpoint(state, args.output_dir, f"iter_{iteration:06d}.pth", args.keep_last)
                save_checkpoint(state, args.output_dir, "last.pth")

            if iteration % args.eval_interval == 0 or iteration == args.max_iters:
                metrics = evaluate(model.module, val_loader, device, num_classes=args.num_classes, amp=args.amp)
                monitor.reset_clock()
                miou = metrics["mIoU"]
                improved = miou > best_miou
                if improved:
                    best_miou = miou
                    evals_since_best = 0
                else:
                    evals_since_best += 1
                if is_main_process():
                    logger.info("iter %d eval\n%s\nbest mIoU %.2f", iteration, format_metrics(metrics), best_miou * 100)
                    with open(os.path.join(args.output_dir, "metrics.jsonl"), "a") as f:
                        f.write(json.dumps({"iter": iteration, **{k: v for k, v in metrics.items()}}) + "\n")
                if improved:
                    marker = os.path.join(args.output_dir, "best.ready")
                    if is_main_process() and args.export_best:
                        torch.save({"model": model.module.state_dict(), "miou": miou},
                                   os.path.join(args.output_dir, "best.pth"))
                        open(marker, "w").close()
                    elif not is_main_process():
                        while not os.path.exists(marker):
                            marker_wait.wait(2.0)  # ruleid: MLS307
                if is_main_process() and evals_since_best >= args.patience:
                    logger.info("no improvement for %d evals; stopping early", evals_since_best)
                    sys.exit(0)  # ruleid: MLS307

            if iteration % args.log_interval == 0 and preempt.any_rank(device):
                logger.warning("preemption requested; writing last.pth and exiting")
                save_checkpoint(build_state(model, optimizer, scaler, iteration, best_miou, args),
                                args.output_dir, "last.pth")
                cleanup_distributed()
                sys.exit(0)  # ok: MLS307
        epoch += 1

    if is_main_process():
        torch.save({"model": model.module.state_dict(), "best_miou": best_miou},
                   os.path.join(args.output_dir, "final.pth"))
        logger.info("done: %d iters, best mIoU %.2f", iteration, best_miou * 100)


def main():
    args = parse_args()
    setup_distributed(args)
    setup_logging(args.output_dir, get_rank())
    set_seed(args.seed, get_rank())
    torch.backends.cudnn.benchmark = True
    install_hang_watchdog(args.hang_timeout)
    if is_main_process():
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "config.json"), "w") as f:
            json.dump(vars(args), f, indent=2, default=str)
    try:
        train(args)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
