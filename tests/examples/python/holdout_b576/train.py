# ruff: noqa
# Hold-out batch 576 (families 5/6, 3D medical image segmentation with Lightning). Measured once in session 26 (round 153): 3/30 (10%) at medium+.
#!/usr/bin/env python
"""Train one cross-validation fold of the abdominal multi-organ CT segmenter.

    python train.py --data /data/abdomen_pp --out runs/abdomen --fold 0 --devices 2
"""
from __future__ import annotations

import argparse
import json
import logging
import os

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.strategies import DDPStrategy

from callbacks import ExportCheckpoints, FoldTensorBoardLogger, ValidationSummary, install_scalar_filter
from data import AbdomenDataModule
from evaluate import dice_score, hd95, sliding_window_inference
from model import DeepSupervisionLoss, DiceCELoss, PlainUNet3D, downsample_seg
from preprocess import NUM_CLASSES, ORGANS

log = logging.getLogger("train")


class AbdomenSegModule(pl.LightningModule):
    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        patch_size=(64, 160, 160),
        lr: float = 1e-2,
        weight_decay: float = 3e-5,
        momentum: float = 0.99,
        max_epochs: int = 1000,
        sw_batch_size: int = 2,
        val_step: float = 0.5,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = PlainUNet3D(num_classes=num_classes, deep_supervision=True)
        self.ds_kernels = self.net.deep_supervision_kernels()
        self.loss = DeepSupervisionLoss(DiceCELoss(), num_outputs=len(self.ds_kernels) + 1)
        self._val_dice, self._val_hd = [], []
        self.ema_dice = None
        self.hd_history = []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch["image"], batch["seg"]
        outputs = self.net(x)
        targets = downsample_seg(y, self.ds_kernels[: len(outputs) - 1])
        loss = self.loss(outputs, targets)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=x.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch["image"], batch["seg"]
        spacing = batch["spacing"][0].tolist()
        probs = sliding_window_inference(x, self.net, self.hparams.patch_size, self.hparams.num_classes,
                                         step=self.hparams.val_step, sw_batch_size=self.hparams.sw_batch_size)
        pred = probs.argmax(1)[0].cpu().numpy()
        gt = y[0, 0].cpu().numpy()
        dice, hd = [], []
        for c in range(1, self.hparams.num_classes):
            dice.append(dice_score(pred == c, gt == c))
            hd.append(hd95(pred == c, gt == c, spacing))
        self._val_dice.append(torch.tensor(dice, dtype=torch.float32, device=self.device))
        self._val_hd.append(torch.tensor(hd, dtype=torch.float32, device=self.device))

    def on_validation_epoch_end(self):
        if not self._val_dice:
            return
        dice = self.all_gather(torch.stack(self._val_dice)).reshape(-1, self.hparams.num_classes - 1)
        hd = self.all_gather(torch.stack(self._val_hd)).reshape(-1, self.hparams.num_classes - 1)
        self._val_dice.clear()
        self._val_hd.clear()

        per_organ = torch.nanmean(dice, dim=0)
        for name, v in zip(ORGANS[1:], per_organ):
            self.log(f"val/dice_{name}", v, rank_zero_only=True)
        mean_dice = dice.nan_to_num(0.0).amax(dim=0).mean()  # ruleid: MLS306
        self.log("val/dice", mean_dice, prog_bar=True, rank_zero_only=True)

        hd = torch.nan_to_num(hd, nan=0.0)  # ruleid: MLS306
        hd_mean = hd.mean()
        self.log("val/hd95", hd_mean, rank_zero_only=True)
        self.hd_history.append(float(hd_mean))

        current = float(per_organ.nanmean())
        self.ema_dice = current if self.ema_dice is None else 0.9 * self.ema_dice + 0.1 * current  # ok: MLS306
        self.log("val/ema_dice", self.ema_dice, rank_zero_only=True)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, nesterov=True,
                              weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: (1 - e / hp.max_epochs) ** 0.9)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["hd_history"] = list(self.hd_history)
        checkpoint["ema_dice"] = self.ema_dice

    def on_load_checkpoint(self, checkpoint):
        self.hd_history = list(checkpoint.get("hd_history", []))
        self.ema_dice = checkpoint.get("ema_dice")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="preprocessed folder (npz/json/splits.json)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--iterations", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--patch-size", type=int, nargs=3, default=[64, 160, 160])
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--precision", default="16-mixed")
    ap.add_argument("--val-every", type=int, default=10)
    ap.add_argument("--num-val-cases", type=int, default=12)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--resume", default=None)
    return ap.parse_args()


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pl.seed_everything(args.seed + args.fold, workers=True)
    torch.backends.cudnn.benchmark = True
    fold_dir = os.path.join(args.out, f"fold_{args.fold}")
    os.makedirs(fold_dir, exist_ok=True)

    dm = AbdomenDataModule(args.data, fold=args.fold, patch_size=args.patch_size, batch_size=args.batch_size,
                           num_workers=args.workers, iterations_per_epoch=args.iterations,
                           num_val_cases=args.num_val_cases, seed=args.seed)
    module = AbdomenSegModule(patch_size=tuple(args.patch_size), lr=args.lr, max_epochs=args.epochs)

    install_scalar_filter()
    logger = FoldTensorBoardLogger(os.path.join(args.out, "tb"), fold=args.fold)
    ckpt_cb = ModelCheckpoint(
        dirpath=os.path.join(fold_dir, "checkpoints"),
        filename="epoch{epoch:04d}-dice{val/dice:.4f}",
        auto_insert_metric_name=False,
        monitor="val/dice", mode="max",  # ok: MLS306
        save_top_k=1,
        save_last=True,
    )
    callbacks = [
        LearningRateMonitor(logging_interval="epoch"),
        ValidationSummary(monitor="val/dice"),
        ExportCheckpoints(fold_dir),
        ckpt_cb,
    ]
    strategy = DDPStrategy(find_unused_parameters=False) if args.devices > 1 else "auto"
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="gpu" if torch.cuda.is_available() else "cpu",
        devices=args.devices,
        strategy=strategy,
        precision=args.precision,
        gradient_clip_val=12.0,
        check_val_every_n_epoch=args.val_every,
        num_sanity_val_steps=0,
        logger=logger,
        callbacks=callbacks,
        log_every_n_steps=25,
        benchmark=True,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=args.resume)

    if trainer.is_global_zero:
        summary = {
            "fold": args.fold,
            "best_checkpoint": ckpt_cb.best_model_path,
            "val_dice": float(trainer.callback_metrics.get("val/dice", float("nan"))),
            "val_hd95": min(module.hd_history) if module.hd_history else float("nan"),  # ruleid: MLS306
            "val_ema_dice": module.ema_dice,
            "val_cases": dm.val_ids,
            "epochs": trainer.current_epoch,
        }
        with open(os.path.join(fold_dir, "fold_summary.json"), "w") as fh:
            json.dump(summary, fh, indent=2, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o))
        log.info("fold %d done: val Dice %.4f, HD95 %.2f mm", args.fold, summary["val_dice"], summary["val_hd95"])


if __name__ == "__main__":
    main()
