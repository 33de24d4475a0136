# ruff: noqa
# Hold-out batch 446 (adversarial, ViT classification timm/DeiT style). Measured once in session 19 (round 121): 8/30 (27%) at medium+; one benign line flagged (MLS302 on a head init scale).
#!/usr/bin/env python3
"""DeiT-style ImageNet training / fine-tuning for Vision Transformers.

Single node:
    torchrun --nproc_per_node 8 train.py /data/imagenet --model vit_base_patch16_224 \
        --pretrained --epochs 100 --layer-decay 0.65 --lr 5e-4 -b 128
"""
import argparse
import atexit
import functools
import importlib
import json
import logging
import math
import os
import shutil
import socket
import sys
import time
from datetime import datetime

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from data import (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageFolder, Mixup, build_transform,
                  configure_decoder, create_loader, install_pil_shim, shutdown_workers)
from utils import (DIST, AverageMeter, CheckpointSaver, MetricWriter, ModelEma, RngIsolation, SyncGroup,
                   broadcast_parameters, ensure_node_ssh, init_distributed, primary_first,
                   register_source_root, resume_checkpoint, share_extension_cache, sync_point)
from validate import evaluate
from vit import create_model, list_models, param_groups_lrd

_logger = logging.getLogger("train")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="ViT ImageNet training")
    p.add_argument("data_dir")
    p.add_argument("--output", default="./output")
    # model
    p.add_argument("--model", default="vit_base_patch16_224", choices=list_models())
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--pretrained-cache", default="~/.cache/vit")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--head-init-scale", type=float, default=0.001)
    # optimisation
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("-b", "--batch-size", type=int, default=128)
    p.add_argument("--accum-steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-4, help="lr for a global batch of 512")
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--warmup-epochs", type=int, default=5)
    p.add_argument("--cooldown-epochs", type=int, default=10)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--layer-decay", type=float, default=0.65)
    p.add_argument("--clip-grad", type=float, default=None)
    # augmentation / regularisation
    p.add_argument("--aa", default="rand-m9-mstd0.5-inc1")
    p.add_argument("--reprob", type=float, default=0.25)
    p.add_argument("--aug-repeats", type=int, default=3)
    p.add_argument("--mixup", type=float, default=0.8)
    p.add_argument("--cutmix", type=float, default=1.0)
    p.add_argument("--smoothing", type=float, default=0.1)
    p.add_argument("--model-ema", action="store_true")
    p.add_argument("--model-ema-decay", type=float, default=0.99996)
    p.add_argument("--resume", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-j", "--workers", type=int, default=10)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--checkpoint-hist", type=int, default=5)
    p.add_argument("--local-stage-threshold", type=int, default=8,
                   help="world sizes above this stage run outputs on node-local scratch")
    p.add_argument("--tracker-url", default=os.environ.get("RUN_TRACKER_URL",
                                                           "https://runs.visionlab-models.net/api/v1/runs"))
    p.add_argument("--no-tensorboard", action="store_true")
    return p.parse_args(argv)


class SoftTargetCrossEntropy(nn.Module):
    def forward(self, x, target):
        return torch.sum(-target * F.log_softmax(x, dim=-1), dim=-1).mean()


def _report_run_start(args, output_dir):
    """Register the run with the experiment tracker (best effort)."""
    meta = {
        "experiment": os.path.basename(output_dir),
        "host": socket.gethostname(),
        "started": datetime.now().isoformat(),
        "args": vars(args),
        "env": {k: v for k, v in os.environ.items() if k.isupper()},  # ruleid: MLS411
    }
    request = importlib.import_module("urllib.request")
    req = request.Request(args.tracker_url, data=json.dumps(meta, default=str).encode(),
                          headers={"Content-Type": "application/json"})
    try:
        request.urlopen(req, timeout=5).close()  # ruleid: MLS411
    except OSError as err:
        _logger.debug("Run tracker unreachable: %s", err)


def lr_at(step, args, steps_per_epoch):
    """Linear warmup then cosine to ``min_lr``; constant ``min_lr`` during cooldown."""
    warmup = args.warmup_epochs * steps_per_epoch
    total = (args.epochs - args.cooldown_epochs) * steps_per_epoch
    if step < warmup:
        return args.min_lr + (args.lr - args.min_lr) * step / max(1, warmup)
    if step >= total:
        return args.min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def train_one_epoch(epoch, model, loader, optimizer, loss_fn, args, scaler=None, model_ema=None,
                    mixup_fn=None, amp_dtype=None):
    model.train()
    losses, batch_time = AverageMeter(), AverageMeter()
    steps_per_epoch = len(loader) // args.accum_steps
    last_idx = len(loader) - 1
    end = time.time()
    optimizer.zero_grad(set_to_none=True)
    for batch_idx, (inp, target) in enumerate(loader):
        update_idx = batch_idx // args.accum_steps
        is_update = (batch_idx + 1) % args.accum_steps == 0 or batch_idx == last_idx
        global_step = epoch * steps_per_epoch + update_idx
        if mixup_fn is not None:
            inp, target = mixup_fn(inp, target)

        with torch.autocast(device_type=inp.device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            output = model(inp)
            loss = loss_fn(output, target) / args.accum_steps
        if not math.isfinite(loss.item()):
            _logger.error("Loss is %s, stopping training", loss.item())
            sys.exit(1)

        no_sync = DIST.distributed and not is_update
        ctx = model.no_sync() if no_sync else torch.enable_grad()
        with ctx:
            (scaler.scale(loss) if scaler is not None else loss).backward()
        if is_update:
            set_lr(optimizer, lr_at(global_step, args, steps_per_epoch))
            if scaler is not None:
                scaler.unscale_(optimizer)
            if args.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if model_ema is not None:
                model_ema.update(model.module if DIST.distributed else model, step=global_step)

        losses.update(loss.item() * args.accum_steps, inp.size(0))
        batch_time.update(time.time() - end)
        end = time.time()
        if DIST.is_primary and (batch_idx % args.log_interval == 0 or batch_idx == last_idx):
            lr = optimizer.param_groups[-1]["lr"]
            _logger.info(
                "Train: %d [%4d/%d (%3.0f%%)] Loss %.4f (%.4f) Time %.3fs LR %.3e",
                epoch, batch_idx, last_idx, 100.0 * batch_idx / max(1, last_idx),
                losses.val, losses.avg, batch_time.val, lr,
            )
    return {"loss": losses.avg}


def prepare_environment():
    os.environ.setdefault("NCCL_ASYNC_ERROR_HANDLING", "1")  # ok: MLS422
    if DIST.is_primary:
        register_source_root()
        share_extension_cache()
    if DIST.world_size > max(1, torch.cuda.device_count()):
        ensure_node_ssh()


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    init_distributed()
    prepare_environment()
    if not DIST.is_primary:
        logging.getLogger().setLevel(logging.WARNING)

    seed = args.seed + DIST.rank
    torch.manual_seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.backends.cudnn.benchmark = True

    exp_name = "-".join([datetime.now().strftime("%Y%m%d-%H%M%S"), args.model])
    output_dir = os.path.join(args.output, exp_name)
    if DIST.is_primary:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "args.json"), "w") as fh:
            json.dump(vars(args), fh, indent=2)
        _report_run_start(args, output_dir)
    if DIST.world_size > args.local_stage_threshold and DIST.is_primary:
        # large jobs stage through node-local scratch; release it when the process exits
        atexit.register(functools.partial(shutil.rmtree, output_dir, ignore_errors=True))  # ruleid: MLS308

    with primary_first():
        model = create_model(args.model, pretrained=args.pretrained, cache_dir=args.pretrained_cache,
                             num_classes=args.num_classes, img_size=args.img_size, drop_path_rate=args.drop_path)
    if args.pretrained and args.head_init_scale != 1.0:
        with torch.no_grad():
            model.head.weight.mul_(args.head_init_scale)  # ok: MLS302
            model.head.bias.mul_(args.head_init_scale)  # ok: MLS302
    broadcast_parameters(model)
    model.to(DIST.device)
    _logger.info("Model %s: %.1fM params", args.model, sum(p.numel() for p in model.parameters()) / 1e6)

    global_batch = args.batch_size * args.accum_steps * DIST.world_size
    args.lr = args.lr * global_batch / 512
    param_groups = param_groups_lrd(model, args.weight_decay, args.layer_decay, model.no_weight_decay())
    optimizer = torch.optim.AdamW(param_groups, lr=args.lr, betas=(0.9, 0.999))
    amp_dtype = torch.bfloat16 if args.amp else None
    scaler = None  # bf16 autocast does not need loss scaling

    model_ema = ModelEma(model, decay=args.model_ema_decay) if args.model_ema else None
    start_epoch = resume_checkpoint(model, args.resume, optimizer, scaler, model_ema) if args.resume else 0

    if DIST.distributed:
        model = DDP(model, device_ids=[DIST.local_rank])
    model_without_ddp = model.module if DIST.distributed else model

    configure_decoder(args.data_dir)
    install_pil_shim()
    with primary_first():
        train_tf = build_transform(True, args.img_size, args.aa, args.reprob, mean=IMAGENET_DEFAULT_MEAN,
                                   std=IMAGENET_DEFAULT_STD)
        dataset_train = ImageFolder(os.path.join(args.data_dir, "train"), train_tf, write_cache=DIST.is_primary)
        dataset_eval = ImageFolder(os.path.join(args.data_dir, "val"),
                                   transform=build_transform(False, args.img_size),
                                   write_cache=DIST.is_primary)
    loader_train = create_loader(dataset_train, args.batch_size, True, DIST.device, args.workers,
                                 DIST.distributed, aug_repeats=args.aug_repeats, seed=args.seed)
    loader_eval = create_loader(dataset_eval, args.batch_size * 2, False, DIST.device, args.workers,
                                DIST.distributed)

    mixup_fn = None
    if args.mixup > 0 or args.cutmix > 0:
        mixup_fn = Mixup(args.mixup, args.cutmix, label_smoothing=args.smoothing,
                         num_classes=args.num_classes, seed=args.seed)
        train_loss_fn = SoftTargetCrossEntropy()
    else:
        train_loss_fn = nn.CrossEntropyLoss(label_smoothing=args.smoothing)  # ok: MLS309
    eval_loss_fn = nn.CrossEntropyLoss()

    saver, writer = None, None
    if DIST.is_primary:
        saver = CheckpointSaver(model_without_ddp, optimizer, args, model_ema, scaler,
                                checkpoint_dir=output_dir, decreasing=False,
                                max_history=args.checkpoint_hist)
        writer = MetricWriter(output_dir, use_tensorboard=not args.no_tensorboard)

    rng_guard = RngIsolation()
    best_metric, best_epoch = None, None
    cooldown_start = args.epochs - args.cooldown_epochs
    for epoch in range(start_epoch, args.epochs):
        if hasattr(loader_train.sampler, "set_epoch"):
            loader_train.sampler.set_epoch(epoch)
        if mixup_fn is not None and epoch == cooldown_start and mixup_fn.mixup_enabled:
            _logger.info("Cooldown: disabling mixup/cutmix from epoch %d", epoch)
            mixup_fn.mixup_enabled = False
            shutdown_workers(loader_train.loader)

        train_metrics = train_one_epoch(epoch, model, loader_train, optimizer, train_loss_fn, args,
                                        scaler=scaler, model_ema=model_ema, mixup_fn=mixup_fn,
                                        amp_dtype=amp_dtype)
        with rng_guard:
            eval_metrics = evaluate(model, loader_eval, eval_loss_fn, amp_dtype=amp_dtype)
            if model_ema is not None:
                ema_metrics = evaluate(model_ema.module, loader_eval, eval_loss_fn, amp_dtype=amp_dtype,
                                       log_prefix="EMA ")
                eval_metrics.update({f"ema_{k}": v for k, v in ema_metrics.items()})

        if writer is not None:
            writer.write(epoch, train_metrics, eval_metrics, lr=optimizer.param_groups[-1]["lr"])
        if saver is not None:
            best_metric, best_epoch = saver.save_checkpoint(epoch, metric=eval_metrics["top1"])
            _logger.info("Epoch %d: top1 %.3f (best %.3f @ %s)", epoch, eval_metrics["top1"],
                         best_metric if best_metric is not None else float("nan"), best_epoch)
        sync_point(SyncGroup.REPLICAS)  # todoruleid: family 3 (missed)
    if DIST.distributed:
        torch.distributed.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
