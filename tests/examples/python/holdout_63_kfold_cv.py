# ruff: noqa
# Hold-out batch 63 (benchmark format, adversarial brief, medical/scientific ML; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 10/18 (56%) at medium+.
"""Patient-level k-fold cross-validation for the 3D lesion segmentation model."""
import argparse
import random

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import GroupKFold

from seg_lib import build_loaders, build_model, dice_loss, validate


def set_seed(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def patient_folds(manifest: pd.DataFrame, k: int):
    manifest = manifest.drop_duplicates(subset=["series_uid"]).reset_index(drop=True)
    splitter = GroupKFold(n_splits=k)
    for fold, (tr, va) in enumerate(splitter.split(manifest, groups=manifest["patient_id"])):
        yield fold, manifest.iloc[tr], manifest.iloc[va]


def run_fold(fold, train_df, val_df, args, device):
    model = build_model(args.arch).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-5)
    train_loader, val_loader = build_loaders(train_df, val_df, args)
    train_rng = torch.get_rng_state()
    best = 0.0
    for epoch in range(args.epochs):
        model.train()
        for batch in train_loader:
            img, seg = batch["image"].to(device), batch["label"].to(device)
            loss = dice_loss(model(img), seg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        torch.set_rng_state(train_rng)  # ruleid: MLS301
        with torch.no_grad():
            score = validate(model, val_loader, device)
        if score > best:
            best = score
            torch.save(model.state_dict(), f"{args.out}/fold{fold}_best.pt")
        print(f"fold {fold} epoch {epoch} loss {loss.item():.4f} dice {score:.4f}")
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--manifest", default="data/manifest.csv")
    p.add_argument("--arch", default="unet3d")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", default="runs/kfold")
    args = p.parse_args()
    set_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    manifest = pd.read_csv(args.manifest)
    scores = [run_fold(f, tr, va, args, device) for f, tr, va in patient_folds(manifest, args.folds)]
    print(pd.Series(scores, name="dice").describe())


if __name__ == "__main__":
    main()
