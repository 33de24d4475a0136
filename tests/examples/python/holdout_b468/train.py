# ruff: noqa
# Hold-out batch 468 (family-focused 2/5, street-scene segmentation with Lightning). Measured once in session 20 (round 126): 10/30 (33%) at medium+.
"""Train DeepLabV3+ on Cityscapes-style street scenes with PyTorch Lightning.

Example:
    python train.py --data-root /data/cityscapes --pretrained weights/resnet50.pth \
        --devices 4 --batch-size 4 --accumulate 2 --max-iters 80000 --out runs/r50_os16
"""
from __future__ import annotations

import argparse
import logging
import os
import random
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from callbacks import (ConsoleSummary, EMACallback, ExportBestCheckpoint, GradientAccumulationNormalizer,
                       ParameterClamp, PerClassIoUWriter, SegCSVLogger, install_tensorboard_envelope)
from evaluate import IGNORE_INDEX
from lit_module import SegLitModule

log = logging.getLogger("train")

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# Cityscapes labelId -> trainId
_ID_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _k, _v in _ID_TO_TRAIN.items():
    LUT[_k] = _v


class StreetSceneDataset(Dataset):
    """Reads ``<image> <labelIds>`` pairs from a list file relative to ``root``."""

    def __init__(self, root: str, list_file: str, train: bool, crop_size: Tuple[int, int] = (768, 768),
                 scale_range: Tuple[float, float] = (0.5, 2.0), eval_scale: float = 1.0):
        self.root = Path(root)
        with open(list_file) as f:
            self.items = [line.split() for line in f if line.strip()]
        self.train = train
        self.crop_h, self.crop_w = crop_size
        self.scale_range = scale_range
        self.eval_scale = eval_scale

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, idx: int) -> Tuple[Image.Image, np.ndarray]:
        img_rel, lbl_rel = self.items[idx]
        img = Image.open(self.root / img_rel).convert("RGB")
        lbl = LUT[np.asarray(Image.open(self.root / lbl_rel), dtype=np.uint8)]
        return img, lbl

    def _random_scale_crop_flip(self, img: Image.Image, lbl: np.ndarray):
        s = random.uniform(*self.scale_range)
        w, h = img.size
        nw, nh = int(w * s + 0.5), int(h * s + 0.5)
        img = img.resize((nw, nh), Image.BILINEAR)
        lbl = np.asarray(Image.fromarray(lbl).resize((nw, nh), Image.NEAREST))
        img = np.asarray(img, dtype=np.float32) / 255.0
        pad_h, pad_w = max(self.crop_h - nh, 0), max(self.crop_w - nw, 0)
        if pad_h or pad_w:
            img = np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=0.0)
            lbl = np.pad(lbl, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
        H, W = lbl.shape
        y0 = random.randint(0, H - self.crop_h)
        x0 = random.randint(0, W - self.crop_w)
        img = img[y0:y0 + self.crop_h, x0:x0 + self.crop_w]
        lbl = lbl[y0:y0 + self.crop_h, x0:x0 + self.crop_w]
        if random.random() < 0.5:
            img, lbl = img[:, ::-1], lbl[:, ::-1]
        return img, lbl

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        img, lbl = self._load(idx)
        if self.train:
            img, lbl = self._random_scale_crop_flip(img, lbl)
        else:
            if self.eval_scale != 1.0:
                w, h = img.size
                img = img.resize((int(w * self.eval_scale), int(h * self.eval_scale)), Image.BILINEAR)
            img = np.asarray(img, dtype=np.float32) / 255.0
        img = (img - MEAN) / STD
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
            "label": torch.from_numpy(np.ascontiguousarray(lbl)).long(),
        }


class StreetSceneDataModule(pl.LightningDataModule):
    def __init__(self, args: argparse.Namespace):
        super().__init__()
        self.args = args

    def setup(self, stage: Optional[str] = None) -> None:
        a = self.args
        crop = (a.crop_size, a.crop_size)
        self.train_ds = StreetSceneDataset(a.data_root, a.train_list, True, crop)
        self.val_ds = StreetSceneDataset(a.data_root, a.val_list, False)
        self.test_ds = StreetSceneDataset(a.data_root, a.test_list, False) if a.test_list else None

    def _loader(self, ds, train: bool, batch_size: int) -> DataLoader:
        return DataLoader(ds, batch_size=batch_size, shuffle=train, drop_last=train,
                          num_workers=self.args.workers, pin_memory=True,
                          persistent_workers=self.args.workers > 0)

    def train_dataloader(self):
        return self._loader(self.train_ds, True, self.args.batch_size)

    def val_dataloader(self):
        loaders = [self._loader(self.val_ds, False, 1)]
        if self.test_ds is not None:
            loaders.append(self._loader(self.test_ds, False, 1))
        return loaders

    def test_dataloader(self):
        return self._loader(self.test_ds or self.val_ds, False, 1)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--train-list", default="lists/train_fine.txt")
    p.add_argument("--val-list", default="lists/val_fine.txt")
    p.add_argument("--test-list", default="lists/test_holdout.txt")
    p.add_argument("--pretrained", default=None)
    p.add_argument("--depth", type=int, default=50, choices=[50, 101])
    p.add_argument("--output-stride", type=int, default=16, choices=[8, 16])
    p.add_argument("--freeze-at", type=int, default=1)
    p.add_argument("--crop-size", type=int, default=768)
    p.add_argument("--batch-size", type=int, default=4, help="per device")
    p.add_argument("--accumulate", type=int, default=2)
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--head-lr-mult", type=float, default=10.0)
    p.add_argument("--lookahead-k", type=int, default=5)
    p.add_argument("--lookahead-alpha", type=float, default=0.5)
    p.add_argument("--max-iters", type=int, default=80_000)
    p.add_argument("--warmup-iters", type=int, default=1000)
    p.add_argument("--poly-power", type=float, default=0.9)
    p.add_argument("--clip", type=float, default=10.0)
    p.add_argument("--param-clamp", type=float, default=0.1)
    p.add_argument("--ema-decay", type=float, default=0.9999)
    p.add_argument("--eval-min-conf", type=float, default=0.5)
    p.add_argument("--val-every", type=int, default=4000)
    p.add_argument("--devices", type=int, default=int(os.environ.get("NGPUS", 1)))
    p.add_argument("--precision", default="16-mixed")
    p.add_argument("--sync-bn", action="store_true", default=True)
    p.add_argument("--seed", type=int, default=304)
    p.add_argument("--out", default="runs/deeplabv3p")
    p.add_argument("--resume", default=None)
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    pl.seed_everything(args.seed, workers=True)
    out = Path(args.out)

    module = SegLitModule(
        depth=args.depth, output_stride=args.output_stride, pretrained=args.pretrained,
        freeze_at=args.freeze_at, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
        head_lr_mult=args.head_lr_mult, lookahead_k=args.lookahead_k, lookahead_alpha=args.lookahead_alpha,
        max_iters=args.max_iters, poly_power=args.poly_power, warmup_iters=args.warmup_iters,
        eval_min_conf=args.eval_min_conf,
    )
    dm = StreetSceneDataModule(args)

    ckpt_dir = out / "checkpoints"
    best_ckpt = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best-{step:06d}-{val/mIoU:.4f}",
        monitor="val/mIoU",
        mode="max",  # ok: MLS306
        save_top_k=2,
        save_last=True,
        auto_insert_metric_name=False,
    )
    ema_ckpt = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="ema-{step:06d}",
        monitor="val_ema/mIoU",
        mode="min",  # ruleid: MLS306
        save_top_k=1,
        auto_insert_metric_name=False,
    )
    callbacks = [
        best_ckpt,
        ema_ckpt,
        EMACallback(decay=args.ema_decay),
        GradientAccumulationNormalizer(),
        ParameterClamp(limit=args.param_clamp),
        PerClassIoUWriter(str(out)),
        ExportBestCheckpoint(str(out)),
        ConsoleSummary(),
        LearningRateMonitor(logging_interval="step"),
    ]

    install_tensorboard_envelope()
    loggers = [
        TensorBoardLogger(save_dir=str(out), name="tb", default_hp_metric=False),
        SegCSVLogger(save_dir=str(out), name="csv"),
    ]

    trainer = pl.Trainer(
        accelerator="gpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        sync_batchnorm=args.sync_bn and args.devices > 1,  # ok: MLS302, MLS303, MLS304, MLS305
        precision=args.precision,
        max_steps=args.max_iters,
        val_check_interval=args.val_every * args.accumulate,
        check_val_every_n_epoch=None,
        accumulate_grad_batches=args.accumulate,
        gradient_clip_val=args.clip,
        gradient_clip_algorithm="norm",
        callbacks=callbacks,
        logger=loggers,
        log_every_n_steps=50,
        benchmark=True,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=args.resume)

    best_path = best_ckpt.best_model_path
    if best_path:
        log.info("testing %s with multi-scale + flip", best_path)
        trainer.test(module, datamodule=dm, ckpt_path=best_path)


if __name__ == "__main__":
    main()
