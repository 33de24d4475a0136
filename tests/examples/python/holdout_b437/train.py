# ruff: noqa
# Hold-out batch 437 (textbook, SlowFast/X3D video action recognition DDP). Measured once in session 18 (round 119): 24/30 (80%) at medium+.
"""DDP training entry point for SlowFast / X3D clip classifiers on Kinetics.

    torchrun --nnodes 2 --nproc_per_node 8 train.py --config cfg/x3d_s.yaml \
        --output-dir out/x3d_s_k400
"""

import argparse
import copy
import json
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import CheckpointManager
from data import build_loader
from evaluate import evaluate
from model import build_model
from utils import (MetricLogger, StepWatchdog, create_writer, init_distributed_mode,
                   is_main_process, load_config, logger, report_run_start, set_seed,
                   setup_logging, setup_runtime_env, topk_accuracy)


def get_args():
    p = argparse.ArgumentParser("video action recognition training")
    p.add_argument("--config", default=None)
    p.add_argument("--opts", nargs="*", default=[], help="key=value config overrides")
    p.add_argument("--output-dir", dest="output_dir", default="out/run")
    # data
    p.add_argument("--data-root", dest="data_root", default="/datasets/kinetics400")
    p.add_argument("--cache-dir", dest="cache_dir", default=None)
    p.add_argument("--num-frames", dest="num_frames", type=int, default=16)
    p.add_argument("--sampling-rate", dest="sampling_rate", type=int, default=5)
    p.add_argument("--crop-size", dest="crop_size", type=int, default=160)
    p.add_argument("--test-crop-size", dest="test_crop_size", type=int, default=182)
    p.add_argument("--test-num-clips", dest="test_num_clips", type=int, default=10)
    p.add_argument("--test-num-crops", dest="test_num_crops", type=int, default=3)
    p.add_argument("--min-samples-per-class", dest="min_samples_per_class", type=int, default=0)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--fast-decode", dest="fast_decode", action="store_true")
    # model
    p.add_argument("--arch", default="x3d_s")
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--slowfast-alpha", dest="slowfast_alpha", type=int, default=4)
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--pretrained-path", dest="pretrained_path", default=None)
    p.add_argument("--sync-bn", dest="sync_bn", action="store_true")
    # optimisation
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--warmup-epochs", dest="warmup_epochs", type=float, default=35)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    p.add_argument("--test-batch-size", dest="test_batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.1, help="lr for a global batch of 256")
    p.add_argument("--min-lr", dest="min_lr", type=float, default=0.0)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", dest="weight_decay", type=float, default=5e-5)
    p.add_argument("--clip-grad", dest="clip_grad", type=float, default=1.0)
    p.add_argument("--accum-steps", dest="accum_steps", type=int, default=1)
    p.add_argument("--label-smoothing", dest="label_smoothing", type=float, default=0.1)
    p.add_argument("--mixup", type=float, default=0.0)
    p.add_argument("--cutmix", type=float, default=0.0)
    p.add_argument("--mixup-prob", dest="mixup_prob", type=float, default=1.0)
    p.add_argument("--ema-decay", dest="ema_decay", type=float, default=0.0)
    p.add_argument("--amp", action="store_true")
    # eval / logging
    p.add_argument("--eval-freq", dest="eval_freq", type=int, default=5)
    p.add_argument("--eval-min-confidence", dest="eval_min_confidence", type=float, default=0.05)
    p.add_argument("--print-freq", dest="print_freq", type=int, default=50)
    p.add_argument("--io-flush-every", dest="io_flush_every", type=int, default=1000)
    p.add_argument("--save-freq", dest="save_freq", type=int, default=5)
    p.add_argument("--keep-last", dest="keep_last", type=int, default=3)
    p.add_argument("--resume", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dist-backend", dest="dist_backend", default="nccl")
    p.add_argument("--dist-url", dest="dist_url", default="env://")
    args = p.parse_args()
    cfg = {}
    if args.config:
        cfg = load_config(args.config, args.opts)
        for section in ("data", "model", "train"):
            for k, v in cfg.get(section, {}).items():
                setattr(args, k, v)
    return args, cfg


class ModelEma:
    """Exponential moving average of model weights (kept on the same device)."""

    def __init__(self, model, decay):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        msd = model.state_dict()
        for k, ema_v in self.shadow.state_dict().items():
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(self.decay).add_(msd[k].detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def state_dict(self):
        return {"shadow": self.shadow.state_dict(), "decay": self.decay}

    def load_state_dict(self, state):
        self.shadow.load_state_dict(state["shadow"])
        self.decay = state["decay"]


class WarmupCosine:
    """Per-iteration linear warm-up followed by half-cosine decay."""

    def __init__(self, optimizer, warmup_iters, total_iters, min_lr=0.0):
        self.optimizer = optimizer
        self.warmup_iters = warmup_iters
        self.total_iters = total_iters
        self.min_lr = min_lr
        self.last_iter = 0
        for g in optimizer.param_groups:
            g.setdefault("base_lr", g["lr"])

    def factor(self, it):
        if it < self.warmup_iters:
            return (it + 1) / max(1, self.warmup_iters)
        progress = (it - self.warmup_iters) / max(1, self.total_iters - self.warmup_iters)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    def step(self):
        f = self.factor(self.last_iter)
        for g in self.optimizer.param_groups:
            g["lr"] = self.min_lr + (g["base_lr"] - self.min_lr) * f  # ok: MLS302, MLS303, MLS304, MLS305
        self.last_iter += 1

    def state_dict(self):
        return {"last_iter": self.last_iter}

    def load_state_dict(self, state):
        self.last_iter = state["last_iter"]


def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def train_one_epoch(model, loader, optimizer, scheduler, scaler, criterion, device, epoch, args,
                    ema=None, writer=None, watchdog=None):
    model.train()
    meters = MetricLogger()
    iters_per_epoch = len(loader)
    optimizer.zero_grad(set_to_none=True)
    end = time.time()

    for step, batch in enumerate(loader):
        clips, targets = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        data_time = time.time() - end
        global_step = epoch * iters_per_epoch + step
        torch.cuda.manual_seed_all(args.seed + epoch)  # ruleid: MLS301

        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=args.amp):
            logits = model(clips)
            loss = criterion(logits, targets) / args.accum_steps

        if not math.isfinite(loss.item()):
            logger.error("non-finite loss %.4f at step %d, skipping", loss.item(), global_step)
            optimizer.zero_grad(set_to_none=True)
            continue

        scaler.scale(loss).backward()
        if (step + 1) % args.accum_steps == 0:
            scaler.unscale_(optimizer)
            if args.distributed:
                for p in model.parameters():
                    if p.grad is not None:
                        p.grad.mul_(args.world_size)  # ruleid: MLS302
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema is not None:
                ema.update(model.module if hasattr(model, "module") else model)
        else:
            grad_norm = torch.tensor(0.0)

        hard = targets.argmax(1) if targets.ndim == 2 else targets
        acc1, acc5 = topk_accuracy(logits.float(), hard, topk=(1, 5))
        lr = optimizer.param_groups[0]["lr"]
        meters.update(n=clips.size(0), loss=loss.item() * args.accum_steps, acc1=acc1, acc5=acc5,
                      data=data_time, batch=time.time() - end)
        if watchdog is not None:
            watchdog.beat()

        if step % args.print_freq == 0:
            logger.info("epoch %d [%d/%d] lr %.5f gnorm %.3f %s", epoch, step, iters_per_epoch,
                        lr, float(grad_norm), meters)
            if writer is not None:
                writer.add_scalar("train/loss", loss.item() * args.accum_steps, global_step)
                writer.add_scalar("train/acc1", acc1.item(), global_step)
                writer.add_scalar("train/lr", lr, global_step)
                writer.add_scalar("train/grad_norm", float(grad_norm), global_step)
        if step and step % args.io_flush_every == 0 and args.rank % 8 == 7:
            time.sleep(40)  # ruleid: MLS307
        end = time.time()

    meters.synchronize()
    return {k: m.global_avg for k, m in meters.meters.items()}


def main():
    args, cfg = get_args()
    init_distributed_mode(args)
    setup_logging(args.output_dir, args.rank)
    setup_runtime_env(args)
    set_seed(args.seed, args.rank)
    report_run_start(args, cfg)
    device = torch.device("cuda", args.local_rank)
    torch.backends.cudnn.benchmark = True
    logger.info("args: %s", json.dumps(vars(args), indent=1, default=str))

    train_ds, train_sampler, train_loader = build_loader(args, "train")
    val_ds, _, val_loader = build_loader(args, "val")
    num_classes = train_ds.num_classes

    model = build_model(args, num_classes)
    if args.distributed and args.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    ema = ModelEma(model, args.ema_decay) if args.ema_decay > 0 else None
    if args.distributed:
        model = DDP(model, device_ids=[args.local_rank], find_unused_parameters=False)

    global_batch = args.batch_size * args.world_size * args.accum_steps
    base_lr = args.lr * global_batch / 256.0
    optimizer = torch.optim.SGD(param_groups(model, args.weight_decay), lr=base_lr,
                                momentum=args.momentum, nesterov=True)
    iters_per_epoch = len(train_loader) // args.accum_steps
    scheduler = WarmupCosine(optimizer, int(args.warmup_epochs * iters_per_epoch),
                             args.epochs * iters_per_epoch, args.min_lr)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
    if args.mixup > 0 or args.cutmix > 0:
        criterion = lambda logits, t: torch.sum(-t * F.log_softmax(logits, dim=-1), dim=-1).mean()
    else:
        criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    ckpt_mgr = CheckpointManager(args.output_dir, keep_last=args.keep_last, save_freq=args.save_freq)
    start_epoch = ckpt_mgr.resume(model, optimizer, scheduler, scaler, args.resume, ema)
    writer = create_writer(args.output_dir)
    watchdog = StepWatchdog().start()
    history = []

    logger.info("training %s: %d classes, global batch %d, base lr %.4f, %d iters/epoch",
                args.arch, num_classes, global_batch, base_lr, iters_per_epoch)
    for epoch in range(start_epoch, args.epochs):
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        t0 = time.time()
        train_stats = train_one_epoch(model, train_loader, optimizer, scheduler, scaler, criterion,
                                      device, epoch, args, ema=ema, writer=writer, watchdog=watchdog)
        logger.info("epoch %d done in %.1fs: %s", epoch, time.time() - t0, train_stats)

        is_last = epoch + 1 == args.epochs
        is_best = False
        if (epoch + 1) % args.eval_freq == 0 or is_last:
            metrics = evaluate(model, val_loader, device, num_classes, args, epoch, writer)
            if ema is not None:
                ema_metrics = evaluate(ema.shadow, val_loader, device, num_classes, args, epoch,
                                       writer, prefix="val_ema")
                metrics["ema_top1"] = ema_metrics["top1"]
            if epoch > args.warmup_epochs and metrics["top1"] < ckpt_mgr.best_acc1 - 5.0:
                for g in optimizer.param_groups:
                    g["base_lr"] *= 3.0  # ruleid: MLS304
            is_best = ckpt_mgr.update_best(metrics["top1"], epoch, args.epochs)
            history.append({"epoch": epoch, **metrics, **{f"train_{k}": v for k, v in train_stats.items()}})
            if writer is not None:
                writer.add_scalar("val/best_top1", ckpt_mgr.best_acc1, epoch)

        ckpt_mgr.save(model, optimizer, scheduler, scaler, epoch, args, ema=ema, is_best=is_best)

    watchdog.stop()
    if is_main_process():
        final = history[-1] if history else {}
        final_top1 = final.get("top1", 0.0)
        summary = {
            "arch": args.arch,
            "epochs": args.epochs,
            "best_top1": ckpt_mgr.best_acc1,
            "best_epoch": ckpt_mgr.best_epoch,
            "final_top1": final_top1 if final_top1 >= ckpt_mgr.best_acc1 - 0.5 else ckpt_mgr.best_acc1,  # todoruleid: family 5 (missed)
            "final_top5": final.get("top5", 0.0),
            "history": history,
        }
        with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        logger.info("done. best top1 %.2f @ epoch %d", ckpt_mgr.best_acc1, ckpt_mgr.best_epoch)
        if writer is not None:
            writer.close()
    if args.distributed:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
