# ruff: noqa
# Hold-out batch 416 (family-focused 5/6, road-scene segmentation). Measured once in session 17 (round 113): 6/30 (20%) at medium+.
"""Train / evaluate DeepLabv3 on Cityscapes with PyTorch Lightning.

Example: python train.py --data-root /datasets/cityscapes --devices 4 --wandb
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Dict, List, Tuple

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from callbacks import (BestMetricTracker, BestModelExporter, ScalarHygiene, TestResultsWriter,
                       write_results_json)
from data import NUM_CLASSES, CityscapesDataModule
from model import SegmentationModule

log = logging.getLogger("train")

TTA_CONFIGS: Dict[str, Tuple[List[float], bool]] = {
    "ss": ([1.0], False),
    "ss_flip": ([1.0], True),
    "ms_flip": ([0.5, 0.75, 1.0, 1.25, 1.5, 1.75], True),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data-root", required=True)
    g.add_argument("--label-suffix", default="_gtFine_labelTrainIds.png")
    g.add_argument("--crop-size", type=int, nargs=2, default=(769, 769))
    g.add_argument("--scale-range", type=float, nargs=2, default=(0.5, 2.0))
    g.add_argument("--rotate-deg", type=float, default=5.0)
    g.add_argument("--classmix-p", type=float, default=0.25)
    g.add_argument("--repeat-factor-thresh", type=float, default=0.1)
    g.add_argument("--val-resize", type=int, nargs=2, default=None)
    g.add_argument("--batch-size", type=int, default=2, help="per device")
    g.add_argument("--val-batch-size", type=int, default=1)
    g.add_argument("--num-workers", type=int, default=8)

    g = p.add_argument_group("model / optimisation")
    g.add_argument("--backbone", default="resnet101", choices=["resnet50", "resnet101"])
    g.add_argument("--output-stride", type=int, default=16, choices=[8, 16])
    g.add_argument("--pretrained-backbone", default=None)
    g.add_argument("--init-from", default=None)
    g.add_argument("--lr", type=float, default=0.01)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--aux-weight", type=float, default=0.4)
    g.add_argument("--epochs", type=int, default=240)
    g.add_argument("--accumulate", type=int, default=1)
    g.add_argument("--clip-grad", type=float, default=0.0)
    g.add_argument("--precision", default="16-mixed")

    g = p.add_argument_group("run")
    g.add_argument("--devices", type=int, default=1)
    g.add_argument("--num-nodes", type=int, default=1)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--out-dir", default="runs")
    g.add_argument("--name", default="deeplabv3_cityscapes")
    g.add_argument("--monitor", default="val/mIoU")
    g.add_argument("--save-top-k", type=int, default=2)
    g.add_argument("--val-every", type=int, default=5)
    g.add_argument("--wandb", action="store_true")
    g.add_argument("--wandb-project", default="cityscapes-seg")
    g.add_argument("--tta", default="all", choices=list(TTA_CONFIGS) + ["all"])
    g.add_argument("--eval-only", action="store_true")
    g.add_argument("--ckpt", default=None, help="checkpoint for --eval-only or resume")
    return p.parse_args(argv)


def build_loggers(args, run_dir: str):
    loggers = [TensorBoardLogger(save_dir=run_dir, name="tb", default_hp_metric=False)]
    if args.wandb:
        loggers.append(WandbLogger(project=args.wandb_project, name=args.name, save_dir=run_dir,
                                   log_model=False))
    return loggers


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    torch.backends.cudnn.benchmark = True

    run_dir = os.path.join(args.out_dir, args.name)
    ckpt_dir = os.path.join(run_dir, "checkpoints")

    dm = CityscapesDataModule(
        root=args.data_root,
        batch_size=args.batch_size,
        val_batch_size=args.val_batch_size,
        num_workers=args.num_workers,
        crop_size=tuple(args.crop_size),
        scale_range=tuple(args.scale_range),
        rotate_deg=args.rotate_deg,
        label_suffix=args.label_suffix,
        classmix_p=args.classmix_p,
        repeat_factor_thresh=args.repeat_factor_thresh,
        val_resize=tuple(args.val_resize) if args.val_resize else None,
        seed=args.seed,
    )
    model = SegmentationModule(
        num_classes=NUM_CLASSES,
        backbone=args.backbone,
        output_stride=args.output_stride,
        lr=args.lr,
        weight_decay=args.weight_decay,
        aux_weight=args.aux_weight,
        pretrained_backbone=args.pretrained_backbone,
        init_from=args.init_from,
    )

    mode = "max" if "loss" in args.monitor else "min"  # ruleid: MLS306
    ckpt_cb = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="epoch{epoch:03d}-miou{val/mIoU:.4f}",
        auto_insert_metric_name=False,
        monitor=args.monitor,
        mode=mode,
        save_top_k=args.save_top_k,
        save_last=True,
    )
    callbacks = [
        ckpt_cb,
        LearningRateMonitor(logging_interval="step"),
        ScalarHygiene(),
        BestMetricTracker(monitor=args.monitor),
        BestModelExporter(os.path.join(run_dir, "export")),
        TestResultsWriter(run_dir),
    ]

    trainer = pl.Trainer(
        accelerator="gpu" if torch.cuda.is_available() else "cpu",
        devices=args.devices if torch.cuda.is_available() else 1,
        num_nodes=args.num_nodes,
        strategy="ddp" if args.devices * args.num_nodes > 1 else "auto",
        sync_batchnorm=args.devices * args.num_nodes > 1,
        precision=args.precision if torch.cuda.is_available() else "32-true",
        max_epochs=args.epochs,
        accumulate_grad_batches=args.accumulate,
        gradient_clip_val=args.clip_grad or None,  # ok: MLS302, MLS303, MLS304, MLS305
        check_val_every_n_epoch=args.val_every,
        use_distributed_sampler=args.repeat_factor_thresh <= 0,
        logger=build_loggers(args, run_dir),
        callbacks=callbacks,
        log_every_n_steps=20,
    )

    if not args.eval_only:
        trainer.fit(model, datamodule=dm, ckpt_path=args.ckpt)
        eval_ckpt = ckpt_cb.best_model_path or ckpt_cb.last_model_path
    else:
        if not args.ckpt:
            log.error("--eval-only requires --ckpt")
            return 2
        eval_ckpt = args.ckpt
    log.info("evaluating %s", eval_ckpt)

    names = list(TTA_CONFIGS) if args.tta == "all" else [args.tta]
    results: Dict[str, Dict[str, object]] = {}
    writer = next(cb for cb in callbacks if isinstance(cb, TestResultsWriter))
    for name in names:
        scales, flip = TTA_CONFIGS[name]
        model.tta_scales, model.tta_flip = list(scales), flip
        writer.tag = name
        out = trainer.test(model, datamodule=dm, ckpt_path=eval_ckpt, verbose=False)[0]
        results[name] = {"test_mIoU": float(out["test/mIoU"]), **(model.test_summary or {})}
        log.info("[%s] scales=%s flip=%s -> mIoU %.2f", name, scales, flip,
                 100.0 * results[name]["test_mIoU"])

    chosen = max(results, key=lambda k: results[k]["test_mIoU"])  # ruleid: MLS306
    final = {
        "tta": chosen,
        "checkpoint": os.path.basename(eval_ckpt) if eval_ckpt else None,
        "backbone": args.backbone,
        "output_stride": args.output_stride,
        "crop_size": list(args.crop_size),
        **results[chosen],
    }
    if trainer.is_global_zero:
        write_results_json(os.path.join(run_dir, "results.json"), final)
        log.info("final (%s): mIoU %.2f", chosen, final.get("mIoU", float("nan")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
