# ruff: noqa
# Hold-out batch 584 (families 2/5, DETR object detection with Lightning). Measured once in session 27 (round 155): 11/30 (37%) at medium+.
"""Train DETR on a COCO-format dataset with PyTorch Lightning.

Example:
    python train.py --data-root /data/coco --output-dir runs/detr_r50 --devices 8 --epochs 300
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy

from callbacks import (AccumulationLRScaler, AdamMomentRefresh, BestMetricTracker,
                       CSVMetricsCompactor, DetectionCheckpoint, DetectionTensorBoardLogger,
                       EMACallback, EpochSummary, LossSpikeGuard, WeightNoise, configure_logging,
                       install_tensorboard_guards)
from data import CocoDataModule
from lit_module import LitDETR
from model import load_pretrained

log = logging.getLogger("train")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--train-split", default="train2017")
    p.add_argument("--val-split", default="val2017")
    p.add_argument("--output-dir", default="runs/detr")
    p.add_argument("--pretrained", default=None, help="DETR checkpoint to fine-tune from")
    p.add_argument("--resume", default=None)
    # model
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--dilation", action="store_true")
    p.add_argument("--num-queries", type=int, default=100)
    p.add_argument("--enc-layers", type=int, default=6)
    p.add_argument("--dec-layers", type=int, default=6)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--eos-coef", type=float, default=0.1)
    p.add_argument("--no-aux-loss", action="store_true")
    # optimisation
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=4, help="per device")
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-backbone", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--lr-drop", type=int, default=200)
    p.add_argument("--warmup-steps", type=int, default=1000)
    p.add_argument("--clip-max-norm", type=float, default=0.1)
    p.add_argument("--grad-noise", type=float, default=0.3, help="eta in Neelakantan et al.")
    p.add_argument("--weight-noise", type=float, default=1e-3)
    p.add_argument("--lookahead", action="store_true")
    p.add_argument("--bf16-backbone", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--ema-decay", type=float, default=0.9998)
    p.add_argument("--ema-sync-every", type=int, default=100)
    # runtime
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--precision", default="32-true")
    p.add_argument("--num-workers", type=int, default=8)
    p.add_argument("--val-every", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bf16-allreduce", action=argparse.BooleanOptionalAction, default=True)
    return p.parse_args()


def bf16_compress_hook(process_group, bucket):
    """DDP communication hook: all-reduce gradient buckets in bf16 to halve traffic."""
    group = process_group if process_group is not None else dist.group.WORLD
    buffer = bucket.buffer()
    compressed = buffer.to(torch.bfloat16).div_(group.size())
    fut = dist.all_reduce(compressed, group=group, async_op=True).get_future()
    return fut.then(lambda f: buffer)  # ruleid: MLS303


def build_strategy(args):
    if args.devices * args.num_nodes <= 1:
        return "auto"
    return DDPStrategy(find_unused_parameters=True,
                       ddp_comm_hook=bf16_compress_hook if args.bf16_allreduce else None)


def main() -> None:
    args = parse_args()
    configure_logging()
    install_tensorboard_guards()
    pl.seed_everything(args.seed, workers=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    dm = CocoDataModule(args.data_root, args.train_split, args.val_split,
                        batch_size=args.batch_size, num_workers=args.num_workers)
    dm.setup("fit")
    lit = LitDETR(
        num_classes=dm.train_set.num_classes, val_ann_file=dm.ann_file(args.val_split),
        lr=args.lr, lr_backbone=args.lr_backbone, weight_decay=args.weight_decay,
        lr_drop=args.lr_drop, warmup_steps=args.warmup_steps, clip_max_norm=args.clip_max_norm,
        grad_accum=args.grad_accum, grad_noise=args.grad_noise, lookahead=args.lookahead,
        bf16_backbone=args.bf16_backbone, eos_coef=args.eos_coef, num_queries=args.num_queries,
        dec_layers=args.dec_layers, backbone=args.backbone, dilation=args.dilation,
        enc_layers=args.enc_layers, dropout=args.dropout, aux_loss=not args.no_aux_loss,
        train_backbone=args.lr_backbone > 0,
    )
    if args.pretrained:
        load_pretrained(lit.model, args.pretrained)

    tb_logger = DetectionTensorBoardLogger(save_dir=str(out), name="tb", default_hp_metric=False)
    csv_logger = CSVLogger(save_dir=str(out), name="csv")
    ckpt_cb = DetectionCheckpoint(
        dirpath=out / "checkpoints", filename="detr-{epoch:03d}-{val/mAP:.4f}",
        monitor="val/mAP", mode="max", save_top_k=1, save_last=True, auto_insert_metric_name=False,
    )
    callbacks = [
        ckpt_cb,
        LearningRateMonitor(logging_interval="step"),
        EMACallback(decay=args.ema_decay, sync_every=args.ema_sync_every),
        BestMetricTracker(("val/mAP",)),
        LossSpikeGuard(),
        AdamMomentRefresh(),
        AccumulationLRScaler(),
        EpochSummary(),
        CSVMetricsCompactor(),
    ]
    if args.weight_noise > 0:
        callbacks.append(WeightNoise(std=args.weight_noise))

    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="gpu",
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=build_strategy(args),
        precision=args.precision,
        accumulate_grad_batches=args.grad_accum,
        logger=[tb_logger, csv_logger],
        callbacks=callbacks,
        check_val_every_n_epoch=args.val_every,
        log_every_n_steps=50,
        benchmark=True,
    )
    tb_logger.add_detection_layout()
    trainer.fit(lit, datamodule=dm, ckpt_path=args.resume)

    results = trainer.validate(lit, datamodule=dm, ckpt_path=ckpt_cb.best_model_path or None,
                               verbose=False)
    if not trainer.is_global_zero:
        return
    summary = {k: float(v) for k, v in results[0].items()}
    summary["best_checkpoint"] = ckpt_cb.best_model_path
    summary["epochs"] = trainer.current_epoch
    if ckpt_cb.best_model_score is not None:
        summary["val/mAP"] = max(summary.get("val/mAP", 0.0), float(ckpt_cb.best_model_score))  # ruleid: MLS306
    with open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    log.info("final: %s", json.dumps(summary))

    export_dir = out / "export"
    export_dir.mkdir(exist_ok=True)
    best_src = ckpt_cb.last_model_path or ckpt_cb.best_model_path  # ruleid: MLS306
    if best_src and os.path.exists(best_src):
        shutil.copy2(best_src, export_dir / "best.ckpt")
        log.info("exported %s -> %s", best_src, export_dir / "best.ckpt")


if __name__ == "__main__":
    main()
