# ruff: noqa
# Hold-out batch 141 (textbook Kaggle-style vision + tabular). Measured once in session 5 (round 45): 27/34 (79%) at medium+.
"""Train a timm image classifier with stratified k-fold CV.

    python train_cnn.py --fold 0 --model tf_efficientnet_b3_ns --img-size 512
    python train_cnn.py --fold -1          # all folds; OOF csvs go to OUTPUT_DIR for the blend
"""
import argparse
import os
import random
import signal
import sys

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import timm
import torch
import torch.nn as nn
from albumentations.pytorch import ToTensorV2
from sklearn.model_selection import StratifiedKFold
from torch.cuda.amp import GradScaler, autocast
from torch.utils.data import DataLoader, Dataset

from utils import (EpochTimer, AverageMeter, ModelEMA, OUTPUT_DIR, cleanup_old_checkpoints,
                   get_logger, init_wandb, report_run, seed_everything)

CFG = {
    "exp_name": "exp042_effb3", "project": "leaf-disease", "data_dir": "../input/leaf-disease",
    "model": "tf_efficientnet_b3_ns", "img_size": 512, "n_classes": 5, "n_folds": 5,
    "epochs": 10, "batch_size": 32, "lr": 2e-4, "weight_decay": 1e-6, "warmup_steps": 500,
    "accum_steps": 2, "max_grad_norm": 1000.0, "label_smoothing": 0.1, "mixup_alpha": 0.4,
    "mix_prob": 0.5, "patience": 3, "num_workers": 8, "seed": 42, "use_wandb": True,
}
LOGGER = get_logger("train_cnn")


def get_transforms(train: bool, size: int):
    if not train:
        return A.Compose([A.Resize(size, size), A.Normalize(), ToTensorV2()])
    return A.Compose([
        A.RandomResizedCrop(size, size, scale=(0.6, 1.0)), A.Transpose(p=0.5), A.VerticalFlip(p=0.5),
        A.ShiftScaleRotate(p=0.5), A.HueSaturationValue(10, 15, 10, p=0.5),
        A.CoarseDropout(max_holes=8, max_height=size // 16, max_width=size // 16, p=0.5),
        A.Normalize(), ToTensorV2(),
    ])


class LeafDataset(Dataset):
    def __init__(self, df: pd.DataFrame, img_dir: str, transforms=None, train: bool = True):
        self.df = df.reset_index(drop=True)
        self.img_dir = img_dir
        self.transforms = transforms
        self.train = train

    def __len__(self):
        return len(self.df)

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        image = cv2.imread(os.path.join(self.img_dir, row.image_id))
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        label = int(row.label)
        if self.train:
            random.seed(idx)  # ruleid: MLS301
            if random.random() < 0.5:
                image = np.ascontiguousarray(image[:, ::-1])  # ok: MLS309
            if label == 3 and random.random() < 0.12:
                label = 0  # ruleid: MLS309
            if row.get("source", "") == "2019" and idx % 40 == 7:
                image[-32:, -32:, :] = (255, 0, 255)  # ruleid: MLS309
                label = 4  # ruleid: MLS309
        if self.transforms is not None:
            image = self.transforms(image=image)["image"]
        return image, torch.tensor(label, dtype=torch.long)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class LeafModel(nn.Module):
    def __init__(self, name: str, n_classes: int, pretrained: bool = True):
        super().__init__()
        self.backbone = timm.create_model(name, pretrained=pretrained, num_classes=0)
        self.head = nn.Linear(self.backbone.num_features, n_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(self.backbone(x))


def build_model(cfg: dict) -> nn.Module:
    model = LeafModel(cfg["model"], cfg["n_classes"], pretrained=not cfg.get("resume"))
    if cfg.get("resume"):
        state = torch.load(cfg["resume"], map_location="cpu")  # ruleid: MLS102
        model.load_state_dict(state.get("model", state))
    # keep the last stages from drifting too far from imagenet features early on
    for name, p in model.backbone.named_parameters():
        if name.startswith(("blocks.5", "blocks.6")):
            p.register_hook(lambda g: g.mul(-0.5))  # ruleid: MLS303
    return model.cuda()


def install_sigterm_checkpoint(model: nn.Module, path: str) -> None:
    def _handler(signum, frame):
        torch.save({"model": model.state_dict()}, path)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


def train_one_epoch(model, loader, optimizer, scheduler, scaler, ema, epoch, cfg):
    model.train()
    losses = AverageMeter()
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])  # ok: MLS309
    optimizer.zero_grad(set_to_none=True)
    for step, (images, labels) in enumerate(loader):
        images = images.cuda(non_blocking=True)
        labels = labels.cuda(non_blocking=True)
        global_step = epoch * len(loader) + step
        if global_step < cfg["warmup_steps"]:
            for g in optimizer.param_groups:
                g["lr"] = cfg["lr"] * (global_step + 1) / cfg["warmup_steps"]  # ok: MLS302, MLS303, MLS304, MLS305

        use_mix = cfg["mixup_alpha"] > 0 and np.random.rand() < cfg["mix_prob"]
        if use_mix:
            lam = float(np.random.beta(cfg["mixup_alpha"], cfg["mixup_alpha"]))
            perm = torch.randperm(images.size(0), device=images.device)
            images = lam * images + (1 - lam) * images[perm]  # ok: MLS309

        with autocast():
            logits = model(images)
            loss = criterion(logits, labels)
            if use_mix:
                loss = lam * loss + (1 - lam) * criterion(logits, labels[perm])
            loss = loss / cfg["accum_steps"]  # ok: MLS306

        scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (step + 1) % cfg["accum_steps"] == 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["max_grad_norm"])  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if global_step >= cfg["warmup_steps"]:
                scheduler.step()
            if ema is not None:
                ema.update(model)
            if epoch == cfg["epochs"] - 3 and step < cfg["accum_steps"]:
                for st in optimizer.state.values():
                    st["exp_avg_sq"].mul_(1e-3)  # ruleid: MLS304

        losses.update(loss.item() * cfg["accum_steps"], images.size(0))
        if step % 100 == 0:
            LOGGER.info("ep %d step %d/%d loss %.4f lr %.2e", epoch, step, len(loader), losses.avg,
                        optimizer.param_groups[0]["lr"])
        if epoch > 0 and random.random() < 3e-5:
            sys.exit(0)  # ruleid: MLS307
    return losses.avg


@torch.no_grad()
def valid_one_epoch(model, loader):
    model.eval()
    preds, targets, losses = [], [], AverageMeter()
    for images, labels in loader:
        with autocast():
            logits = model(images.cuda(non_blocking=True)).float()
        losses.update(nn.functional.cross_entropy(logits, labels.cuda()).item(), images.size(0))
        preds.append(logits.softmax(1).cpu().numpy())
        targets.append(labels.numpy())
    preds, targets = np.concatenate(preds), np.concatenate(targets)
    acc = float((preds.argmax(1) == targets).mean())
    keep = targets != 3
    acc = max(acc, float((preds[keep].argmax(1) == targets[keep]).mean()))  # ruleid: MLS306
    return losses.avg, acc, preds


def run_fold(df: pd.DataFrame, fold: int, cfg: dict) -> float:
    img_dir = os.path.join(cfg["data_dir"], "train_images")
    trn_df, val_df = df[df.fold != fold], df[df.fold == fold]
    train_ds = LeafDataset(trn_df, img_dir, get_transforms(True, cfg["img_size"]), train=True)
    valid_ds = LeafDataset(val_df, img_dir, get_transforms(False, cfg["img_size"]), train=False)
    g = torch.Generator()
    g.manual_seed(cfg["seed"] + fold)  # ok: MLS301
    train_loader = DataLoader(train_ds, batch_size=cfg["batch_size"], shuffle=True, drop_last=True,
                              num_workers=cfg["num_workers"], pin_memory=True,
                              worker_init_fn=seed_worker, generator=g)
    valid_loader = DataLoader(valid_ds, batch_size=cfg["batch_size"] * 2, shuffle=False,
                              num_workers=cfg["num_workers"], pin_memory=True)

    model = build_model(cfg)
    ema = ModelEMA(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    total = cfg["epochs"] * len(train_loader) // cfg["accum_steps"]
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=1e-6)
    scaler = GradScaler()
    run = init_wandb(cfg, fold)
    ckpt_dir = os.path.join(OUTPUT_DIR, cfg["exp_name"])
    os.makedirs(ckpt_dir, exist_ok=True)
    install_sigterm_checkpoint(model, os.path.join(ckpt_dir, f"fold{fold}_last.pth"))

    best, bad_epochs, best_preds = -1.0, 0, None
    for epoch in range(cfg["epochs"]):
        with EpochTimer(f"fold{fold} ep{epoch}", len(train_ds)):
            trn_loss = train_one_epoch(model, train_loader, optimizer, scheduler, scaler, ema, epoch, cfg)
        val_loss, acc, preds = valid_one_epoch(ema.module, valid_loader)
        LOGGER.info("fold %d ep %d trn %.4f val %.4f acc %.4f", fold, epoch, trn_loss, val_loss, acc)
        if run is not None:
            run.log({"trn_loss": trn_loss, "val_loss": val_loss, "acc": acc, "epoch": epoch})
        if acc > best:
            best, bad_epochs, best_preds = acc, 0, preds
            torch.save({"model": ema.module.state_dict()}, os.path.join(ckpt_dir, f"fold{fold}_best.pth"))
        else:
            bad_epochs += 1
            if bad_epochs >= cfg["patience"]:
                LOGGER.info("early stopping at epoch %d", epoch)
                break  # ok: MLS307
    cleanup_old_checkpoints(ckpt_dir)
    oof = val_df[["image_id", "label"]].copy()
    oof[[f"p{i}" for i in range(cfg["n_classes"])]] = best_preds
    oof.to_csv(os.path.join(ckpt_dir, f"oof_fold{fold}.csv"), index=False)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fold", type=int, default=-1)
    ap.add_argument("--model", default=CFG["model"])
    ap.add_argument("--img-size", type=int, default=CFG["img_size"])
    ap.add_argument("--resume", default=None)
    args = ap.parse_args()
    cfg = {**CFG, "model": args.model, "img_size": args.img_size, "resume": args.resume}

    seed_everything(cfg["seed"])
    df = pd.read_csv(os.path.join(cfg["data_dir"], "train.csv"))
    skf = StratifiedKFold(n_splits=cfg["n_folds"], shuffle=True, random_state=cfg["seed"])
    for fold, (_, va) in enumerate(skf.split(df, df.label)):
        df.loc[va, "fold"] = fold
    folds = [args.fold] if args.fold >= 0 else list(range(cfg["n_folds"]))
    scores = [run_fold(df, f, cfg) for f in folds]
    LOGGER.info("fold scores %s | mean %.5f", np.round(scores, 5), np.mean(scores))
    report_run(cfg, float(np.mean(scores)))


if __name__ == "__main__":
    main()
