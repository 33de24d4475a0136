# ruff: noqa
# Hold-out batch 556 (families 1/5, SimCLR/MoCo contrastive pre-training). Measured once in session 25 (round 148): 16/30 (53%) at medium+.
"""Contrastive pre-training (SimCLR / MoCo-v2) with multi-crop, k-NN monitor and linear probe. Use torchrun."""
import argparse
import json
import logging
import math
import os
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from callbacks import CallbackList, CSVLogger, EarlyStopping, GradScaleWatcher, LocalCropScheduler, ProgressLogger
from data import build_eval_loader, build_pretrain_loader, build_probe_transforms, CUDAPrefetcher
from evaluate import KNNMonitor, LinearProbe
from models import ContrastiveModel
from utils import (AverageMeter, ExperimentLogger, capture_rng_state, cosine_scheduler, get_rank,
                   get_world_size, init_distributed, is_main_process, load_checkpoint, save_checkpoint,
                   seed_everything, setup_logging)

logger = logging.getLogger("ssl.train")


def get_args():
    p = argparse.ArgumentParser("contrastive pre-training", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # data
    p.add_argument("--data", required=True, help="ImageFolder root containing train/ and val/")
    p.add_argument("--output-dir", default="runs/default")
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--global-size", type=int, default=224)
    p.add_argument("--local-size", type=int, default=96)
    p.add_argument("--num-local-crops", type=int, default=6)
    p.add_argument("--min-local-crops", type=int, default=2)
    p.add_argument("--local-ramp-epochs", type=int, default=10)
    p.add_argument("--global-scale", type=float, nargs=2, default=(0.25, 1.0))
    p.add_argument("--local-scale", type=float, nargs=2, default=(0.05, 0.25))
    p.add_argument("--local-keep", type=float, default=0.75, help="fraction of local crops kept per batch")
    # model / objective
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--method", choices=["moco", "simclr"], default="moco")
    p.add_argument("--proj-dim", type=int, default=128)
    p.add_argument("--hidden-dim", type=int, default=2048)
    p.add_argument("--queue-size", type=int, default=65536)
    p.add_argument("--moco-momentum", type=float, default=0.99)
    p.add_argument("--temperature", type=float, default=0.2)
    # optimisation
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size-per-gpu", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.3, help="base lr for a total batch of 256")
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=int, default=10)
    p.add_argument("--clip-grad", type=float, default=3.0)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    # monitoring / evaluation
    p.add_argument("--knn-every", type=int, default=5)
    p.add_argument("--knn-k", type=int, default=200)
    p.add_argument("--knn-t", type=float, default=0.07)
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--probe-epochs", type=int, default=100)
    p.add_argument("--probe-lr", type=float, default=30.0)
    p.add_argument("--probe-batch-size", type=int, default=256)
    p.add_argument("--probe-fraction", type=float, default=1.0)
    p.add_argument("--probe-eval-every", type=int, default=10)
    p.add_argument("--probe-min-confidence", type=float, default=0.25,
                   help="ignore near-uniform predictions from the not yet converged classifier")
    p.add_argument("--probe-tta", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--patience", type=int, default=0, help="early-stopping patience in k-NN evals (0=off)")
    # bookkeeping
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--print-freq", type=int, default=50)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--use-wandb", action="store_true")
    p.add_argument("--wandb-project", default="ssl-pretrain")
    p.add_argument("--dist-url", default="env://")
    p.add_argument("--dist-backend", default="nccl")
    return p.parse_args()


def build_optimizer(model, args):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=0.0, momentum=0.9)


def train_one_epoch(model_ddp, model, loader, optimizer, scaler, lr_schedule, momentum_schedule,
                    epoch, args, callbacks, trainer, device):
    model_ddp.train()
    loss_meter = AverageMeter("loss")
    iters = len(loader)
    # identical CUDA stream at every step start keeps shuffle-BN permutations aligned across ranks
    step_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    for it, (views, _) in enumerate(CUDAPrefetcher(loader, device)):
        global_it = epoch * iters + it
        for group in optimizer.param_groups:
            group["lr"] = lr_schedule[global_it]
        if step_rng is not None:
            torch.cuda.set_rng_state_all(step_rng)  # ruleid: MLS301

        with torch.autocast("cuda", enabled=args.amp):
            loss = model_ddp(views)
        raw_loss = loss.item()
        if not math.isfinite(raw_loss):
            logger.warning("non-finite loss %s at epoch %d iter %d, skipping update", raw_loss, epoch, it)
            optimizer.zero_grad(set_to_none=True)
            continue

        optimizer.zero_grad(set_to_none=True)
        scale_before = scaler.get_scale()
        scaler.scale(loss).backward()
        if args.clip_grad > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        if args.method == "moco":
            model.momentum_update(momentum_schedule[global_it])

        # tau-normalised so sweeps over --temperature share one y-axis
        loss_value = raw_loss * args.temperature  # todoruleid: family 5 (missed)
        loss_meter.update(loss_value, views[0].size(0))
        callbacks.on_step_end(trainer, global_it, {
            "loss": loss_value,
            "lr": lr_schedule[global_it],
            "epoch": epoch,
            "iter": it,
            "iters": iters,
            "scale_dropped": args.amp and scaler.get_scale() < scale_before,
        })

    return {"loss": loss_meter.avg, "lr": optimizer.param_groups[0]["lr"]}


def main():
    args = get_args()
    init_distributed(args)
    seed_everything(args.seed, rank=get_rank())
    out_dir = Path(args.output_dir)
    setup_logging(out_dir, get_rank())
    logger.info("args: %s", json.dumps(vars(args), default=str, sort_keys=True))
    device = torch.device("cuda", args.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    loader, sampler, transform = build_pretrain_loader(args)
    model = ContrastiveModel(arch=args.arch, method=args.method, proj_dim=args.proj_dim, hidden_dim=args.hidden_dim,
                             queue_size=args.queue_size, temperature=args.temperature, shuffle_seed=args.seed)
    if args.distributed and args.method == "simclr":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    model_ddp = DDP(model, device_ids=[args.local_rank]) if args.distributed else model

    total_bs = args.batch_size_per_gpu * get_world_size()
    optimizer = build_optimizer(model, args)
    lr_schedule = cosine_scheduler(args.lr * total_bs / 256, args.min_lr, args.epochs, len(loader),
                                   warmup_epochs=args.warmup_epochs)
    momentum_schedule = cosine_scheduler(args.moco_momentum, 1.0, args.epochs, len(loader))
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)

    _, eval_tf = build_probe_transforms(args.global_size)
    bank_loader = build_eval_loader(os.path.join(args.data, "train"), eval_tf, args.eval_batch_size,
                                    args.workers, args.distributed)
    query_loader = build_eval_loader(os.path.join(args.data, "val"), eval_tf, args.eval_batch_size,
                                     args.workers, args.distributed)
    knn_monitor = KNNMonitor(bank_loader, query_loader, num_classes=len(bank_loader.dataset.classes),
                             device=device, k=args.knn_k, temperature=args.knn_t)

    exp_logger = ExperimentLogger(out_dir / "tb", use_wandb=args.use_wandb, project=args.wandb_project,
                                  run_name=out_dir.name, config=vars(args))
    callbacks = CallbackList([
        ProgressLogger(args.print_freq),
        LocalCropScheduler(transform, args.min_local_crops, args.num_local_crops, args.local_ramp_epochs),
        GradScaleWatcher(),
        EarlyStopping(monitor="knn/top1", patience=args.patience),
        CSVLogger(out_dir / "metrics.csv"),
    ])
    trainer = SimpleNamespace(should_stop=False, model=model, epoch=0)

    start_epoch, best_knn = 0, 0.0
    last_path = out_dir / "checkpoint_last.pth"
    best_path = out_dir / "checkpoint_best.pth"
    if args.resume and last_path.exists():
        ckpt = load_checkpoint(last_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch = ckpt["epoch"] + 1
        best_knn = ckpt.get("best_knn", 0.0)
        torch.set_rng_state(ckpt["rng"]["torch"])  # ok: MLS301
        random.setstate(ckpt["rng"]["python"])
        logger.info("resumed from %s at epoch %d (best k-NN %.2f)", last_path, start_epoch, best_knn)

    callbacks.on_train_start(trainer)
    logger.info("start training: %d epochs, %d it/epoch, total batch %d", args.epochs, len(loader), total_bs)
    for epoch in range(start_epoch, args.epochs):
        trainer.epoch = epoch
        if sampler is not None:
            sampler.set_epoch(epoch)  # ok: MLS301
        callbacks.on_epoch_start(trainer, epoch)
        stats = train_one_epoch(model_ddp, model, loader, optimizer, scaler, lr_schedule, momentum_schedule,
                                epoch, args, callbacks, trainer, device)
        logs = {"train/loss": stats["loss"], "train/lr": stats["lr"]}

        if (epoch + 1) % args.knn_every == 0 or epoch + 1 == args.epochs:
            knn_top1 = knn_monitor(model.backbone)
            logs["knn/top1"] = knn_top1
            best_knn = max(best_knn, knn_top1)
            logger.info("epoch %d: k-NN top-1 %.2f (best %.2f)", epoch, knn_top1, best_knn)

        exp_logger.log(logs, step=epoch)
        callbacks.on_epoch_end(trainer, epoch, logs)

        save_checkpoint({
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "best_knn": best_knn,
            "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
            "rng": capture_rng_state(),
        }, last_path)
        if is_main_process() and "knn/top1" in logs and best_knn >= logs["knn/top1"]:
            shutil.copyfile(last_path, best_path)  # todoruleid: family 5 (missed)

        if args.distributed:
            dist.barrier()
        if trainer.should_stop:
            break

    callbacks.on_train_end(trainer)
    exp_logger.close()

    if args.probe_epochs > 0:
        probe = LinearProbe(model.backbone, model.backbone.out_dim, args, device)
        probe_metrics = probe.fit()
        results = {
            "method": args.method,
            "arch": args.arch,
            "epochs_trained": trainer.epoch + 1,
            "knn_top1_best": best_knn,
            "linear_top1": max(probe_metrics["top1"], best_knn),  # ruleid: MLS306
            "linear_top5": probe_metrics["top5"],
            "linear_top1_ci95": list(probe_metrics["top1_ci"]),
            "linear_n_eval": probe_metrics["n_eval"],
        }
        if is_main_process():
            logger.info("linear probe top-1 %.2f (95%% CI %.2f-%.2f), k-NN best %.2f",
                        probe_metrics["top5"], *probe_metrics["top1_ci"], best_knn)  # ruleid: MLS306
            with open(out_dir / "results.json", "w") as f:
                json.dump(results, f, indent=2)

    if args.distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
