# ruff: noqa
# Hold-out batch 483 (16 short files, 16 domains). Measured once in session 21 (round 130): 13/17 (76%) at medium+.
"""Training loop for DeepDTA-style drug-target binding affinity regression (Davis / KIBA)."""
import logging
import os

import torch
import torch.nn.functional as F
from lifelines.utils import concordance_index

log = logging.getLogger(__name__)


def scale_lr_for_world_size(optimizer, ref_world=4):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > ref_world:  # todoruleid: family 4 (missed)
        for g in optimizer.param_groups:
            g["lr"] = g["lr"] * world / ref_world  # ruleid: MLS304


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    preds, ys = [], []
    for smiles, protein, y in loader:
        preds.append(model(smiles.to(device), protein.to(device)).squeeze(-1).cpu())
        ys.append(y)
    p, y = torch.cat(preds), torch.cat(ys)
    mse = F.mse_loss(p, y).item()
    ci = concordance_index(y.numpy(), p.numpy())
    return mse, ci


def train(model, train_dl, val_dl, args, device):
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=5)  # ok: MLS302, MLS303, MLS304, MLS305
    best_mse = float("inf")
    for epoch in range(args.epochs):
        scale_lr_for_world_size(optimizer)
        model.train()
        running = 0.0
        for smiles, protein, y in train_dl:
            smiles, protein, y = smiles.to(device), protein.to(device), y.to(device)
            pred = model(smiles, protein).squeeze(-1)
            loss = F.mse_loss(pred, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * y.size(0)
        train_mse = running / len(train_dl.dataset)
        mse, ci = evaluate(model, val_dl, device)
        scheduler.step(mse)
        log.info("epoch %d train_mse %.4f val_mse %.4f val_ci %.4f lr %.2e",
                 epoch, train_mse, mse, ci, optimizer.param_groups[0]["lr"])
        if mse < best_mse:
            best_mse = mse
            torch.save({"model": model.state_dict(), "epoch": epoch, "mse": mse, "ci": ci},
                       os.path.join(args.out_dir, "best.pt"))
    return best_mse
