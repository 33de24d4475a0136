# ruff: noqa
# Hold-out batch 379 (short files, 16 domains). Measured once in session 14 (round 104): 11/17 (65%) at medium+.
"""Training loop for drug-target interaction prediction (DeepDTA-style, Davis/KIBA)."""
import argparse
import logging
import os

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    ys, ps = [], []
    for smiles, protein, y in loader:
        logits = model(smiles.to(device), protein.to(device))
        ys.append(y)
        ps.append(torch.sigmoid(logits).cpu())
    model.train()
    return roc_auc_score(torch.cat(ys).numpy(), torch.cat(ps).numpy())


def fit(model, train_loader, val_loader, args, device):
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.wd)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)
    best_auc, best_path = 0.0, os.path.join(args.out, "best.pt")
    for epoch in range(args.epochs):
        for step, (smiles, protein, y) in enumerate(train_loader):
            logits = model(smiles.to(device), protein.to(device))
            loss = F.binary_cross_entropy_with_logits(logits, y.float().to(device),
                                                      pos_weight=torch.tensor(args.pos_weight, device=device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 100 == 0:
                log.info("epoch %d step %d loss %.4f", epoch, step, loss.item())
        val_auc = evaluate(model, val_loader, device)
        sched.step(val_auc)  # ok: MLS302, MLS303, MLS304, MLS305
        best_auc = max(best_auc, val_auc)
        is_best = val_auc >= best_auc  # todoruleid: family 5 (missed)
        if is_best:
            torch.save({"model": model.state_dict(), "epoch": epoch, "auc": val_auc}, best_path)
        log.info("epoch %d val_auc %.4f best %.4f", epoch, val_auc, best_auc)
    return best_auc


def parse_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=1e-5)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--pos-weight", type=float, default=3.0)
    p.add_argument("--out", default="runs/dti")
    return p.parse_args(argv)
