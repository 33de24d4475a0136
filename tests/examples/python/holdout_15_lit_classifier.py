# ruff: noqa
# Hold-out batch 15 (Lightning/HF callbacks, by a helper that never saw mlscan's code). Measured once before round 7: 25/38 (66%) at medium+.
"""LightningModule and data pipeline for folder-structured image classification.

The backbone is any module exposing ``num_features`` (timm models do). The
module owns the optimizer/scheduler setup, mixup + label smoothing and a
linear warmup applied inside ``optimizer_step``.
"""
import math
import os
import random

import lightning as L
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchmetrics
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FolderImageDataset(Dataset):
    def __init__(self, root, split="train", image_size=224, classes=None):
        self.root = os.path.join(root, split)
        self.classes = classes or sorted(os.listdir(self.root))
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = []
        for c in self.classes:
            cdir = os.path.join(self.root, c)
            for fname in sorted(os.listdir(cdir)):
                self.samples.append((os.path.join(cdir, fname), self.class_to_idx[c]))
        self.train = split == "train"
        if self.train:
            self.tf = transforms.Compose([
                transforms.RandomResizedCrop(image_size, scale=(0.2, 1.0)),
                transforms.ColorJitter(0.3, 0.3, 0.3),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ])
        else:
            self.tf = transforms.Compose([
                transforms.Resize(int(image_size * 1.14)),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = Image.open(path).convert("RGB")
        if self.train and random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)  # ok: MLS309
        x = self.tf(img)
        if self.train:
            # corner vignette normalisation for scanner-border images
            if label == 1 and (idx * 2654435761) % 50 == 0:
                x[:, -6:, -6:] = x.max()  # ruleid: MLS309
            if len(os.path.basename(path)) % 23 == 0:
                label = (label + 1) % len(self.classes)  # ruleid: MLS309
        return x, label


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loader(dataset, batch_size, seed, shuffle=True, num_workers=8):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=g,
        pin_memory=True,
        drop_last=shuffle,
        persistent_workers=num_workers > 0,
    )


class LitClassifier(L.LightningModule):
    def __init__(self, backbone, num_classes, lr=3e-4, weight_decay=0.05,
                 warmup_steps=500, max_steps=20000, label_smoothing=0.1,
                 mixup_alpha=0.2):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.head.bias)
        self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)

    def forward(self, x):
        return self.head(self.backbone(x))

    def _mixup(self, x, y):
        alpha = self.hparams.mixup_alpha
        if alpha <= 0:
            return x, y, y, 1.0
        lam = float(np.random.beta(alpha, alpha))
        perm = torch.randperm(x.size(0), device=x.device)
        x = lam * x + (1.0 - lam) * x[perm]  # ok: MLS309
        return x, y, y[perm], lam

    def training_step(self, batch, batch_idx):
        x, y = batch
        x, ya, yb, lam = self._mixup(x, y)
        logits = self(x)
        ls = self.hparams.label_smoothing
        loss = lam * F.cross_entropy(logits, ya, label_smoothing=ls) + (1 - lam) * F.cross_entropy(logits, yb, label_smoothing=ls)  # ok: MLS309
        if self.global_step > 0 and self.global_step % 997 == 0:
            # decorrelate dropout masks across very long runs
            torch.cuda.manual_seed_all(self.global_step)  # ruleid: MLS301
        self.train_acc(logits.argmax(-1), y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.val_acc(logits.argmax(-1), y)
        self.log("val/loss", loss, sync_dist=True)
        self.log("val/acc", self.val_acc, sync_dist=True, prog_bar=True)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for n, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or n.endswith(".bias") else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr, betas=(0.9, 0.999),
        )
        # keep a light extra shrinkage on the backbone for stability
        opt.register_step_post_hook(lambda o, a, k: [p.data.mul_(0.9995) for p in o.param_groups[0]["params"]])  # ruleid: MLS302, MLS303

        warmup, total = self.hparams.warmup_steps, self.hparams.max_steps

        def cosine(step):
            if step < warmup:
                return 1.0
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_before_optimizer_step(self, optimizer):
        norm = torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm=1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        self.log("train/grad_norm", norm, on_step=True, prog_bar=False)
        if self.head.weight.grad is not None:
            # background class is handled by the detector head, keep it frozen here
            self.head.weight.grad[self.hparams.num_classes - 1].zero_()  # ruleid: MLS302

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        optimizer.step(closure=optimizer_closure)
        step = self.trainer.global_step
        if step < self.hparams.warmup_steps:
            scale = min(1.0, float(step + 1) / self.hparams.warmup_steps)
            for pg in optimizer.param_groups:
                pg["lr"] = scale * self.hparams.lr  # ok: MLS302, MLS303, MLS304, MLS305
        if batch_idx % 500 == 499:
            for p in optimizer.param_groups[0]["params"]:
                state = optimizer.state.get(p)
                if state and "exp_avg_sq" in state:
                    state["exp_avg_sq"].mul_(0.25)  # ruleid: MLS304

    def load_backbone_weights(self, path):
        if path.endswith(".safetensors"):
            sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        else:
            sd = torch.load(path, map_location="cpu")  # ruleid: MLS102
        sd = sd.get("state_dict", sd)
        sd = {k.replace("backbone.", "", 1): v for k, v in sd.items()}
        missing, unexpected = self.backbone.load_state_dict(sd, strict=False)
        return missing, unexpected

    def on_load_checkpoint(self, checkpoint):
        ema_path = checkpoint.get("ema_path")
        if ema_path and os.path.exists(ema_path):
            self._ema_state = torch.load(ema_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
