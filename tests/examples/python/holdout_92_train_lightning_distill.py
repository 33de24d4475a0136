# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""Lightning recipe for DeiT-style hard distillation from a frozen CNN teacher."""
import argparse
import math

import lightning.pytorch as pl
import timm
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from timm.data import create_dataset, create_loader


class HardDistill(pl.LightningModule):
    def __init__(self, student, teacher, lr=5e-4, warmup_steps=5000, total_steps=375000, smoothing=0.1):
        super().__init__()
        self.save_hyperparameters(ignore=["student", "teacher"])
        self.student = student
        self.teacher = teacher.eval().requires_grad_(False)

    def training_step(self, batch, batch_idx):
        x, y = batch
        cls_out, dist_out = self.student(x)
        with torch.no_grad():
            teacher_y = self.teacher(x).argmax(dim=-1)  # ok: MLS309
        loss = 0.5 * F.cross_entropy(cls_out, y, label_smoothing=self.hparams.smoothing) \
            + 0.5 * F.cross_entropy(dist_out, teacher_y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        acc = (self.student(batch[0]).argmax(-1) == batch[1]).float().mean()
        self.log("val/acc", acc, sync_dist=True)  # ok: MLS306

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.student.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        w, t = self.hparams.warmup_steps, self.hparams.total_steps

        def lr_lambda(step):
            if step < w:
                return (step + 1) / w
            return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, t - w)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--student", default="deit_small_distilled_patch16_224")
    p.add_argument("--teacher", default="regnety_160")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="/datasets/imagenet")
    args = p.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301

    student = timm.create_model(args.student, pretrained=False, drop_path_rate=0.1)
    teacher = timm.create_model(args.teacher, pretrained=True)
    trainer = pl.Trainer(gradient_clip_val=1.0, devices="auto", strategy="ddp",  # ok: MLS302, MLS303, MLS304, MLS305
                         precision="bf16-mixed", max_steps=375000, val_check_interval=5000,
                         callbacks=[EarlyStopping("val/acc", mode="max", patience=10), LearningRateMonitor()])
    train_loader = create_loader(create_dataset("", root=args.data, split="train", is_training=True),
                                 input_size=(3, 224, 224), batch_size=128, is_training=True,
                                 auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25, num_workers=10)
    val_loader = create_loader(create_dataset("", root=args.data, split="validation"),
                               input_size=(3, 224, 224), batch_size=256, num_workers=10)
    trainer.fit(HardDistill(student, teacher), train_loader, val_loader)


if __name__ == "__main__":
    main()
