# ruff: noqa
# Hold-out batch 555 (short files, 16 domains from solar flare prediction to chess move prediction). Measured once in session 25 (round 148): 14/17 (82%) at medium+.
"""Training loop for DeepDTA-style drug-target binding affinity regression (Davis / KIBA)."""
import logging

import numpy as np
import torch
import torch.nn.functional as F
from lifelines.utils import concordance_index

log = logging.getLogger("dta")


def build_optimizer(model, args, steps_per_epoch):
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.1
    )
    return optimizer, scheduler


def restart_moments(optimizer, epoch, every):
    """Periodic warm restart of the adaptive moments to escape flat pKd plateaus."""
    if epoch == 0 or epoch % every:
        return
    for state in optimizer.state.values():
        if "exp_avg_sq" in state:
            state["exp_avg_sq"].zero_()  # ruleid: MLS304


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    ys, ps = [], []
    for smiles_tok, prot_tok, y in loader:
        ps.append(model(smiles_tok.to(device), prot_tok.to(device)).squeeze(-1).cpu())
        ys.append(y)
    y, p = torch.cat(ys).numpy(), torch.cat(ps).numpy()
    return {"mse": float(np.mean((y - p) ** 2)), "ci": float(concordance_index(y, p))}


def train(model, train_loader, val_loader, args, device):
    optimizer, scheduler = build_optimizer(model, args, len(train_loader))
    best_mse = float("inf")
    for epoch in range(args.epochs):
        model.train()
        restart_moments(optimizer, epoch, args.restart_every)
        for smiles_tok, prot_tok, y in train_loader:
            pred = model(smiles_tok.to(device), prot_tok.to(device)).squeeze(-1)
            loss = F.mse_loss(pred, y.to(device).float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        metrics = evaluate(model, val_loader, device)
        log.info("epoch %d mse %.4f ci %.4f", epoch, metrics["mse"], metrics["ci"])
        if metrics["mse"] < best_mse:
            best_mse = metrics["mse"]
            torch.save(model.state_dict(), args.out)
    return best_mse
