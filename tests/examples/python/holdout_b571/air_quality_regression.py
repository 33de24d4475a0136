# ruff: noqa
# Hold-out batch 571 (short files, 16 domains). Measured once in session 26 (round 152): 14/17 (82%) at medium+.
"""Training loop for PM2.5 regression from station + meteorology features (Beijing multi-site)."""
import logging
import math
import os

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


class PMRegressor(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, x):
        return self.net(x).squeeze(-1)


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    se, n = 0.0, 0
    for x, y in loader:
        pred = model(x.to(device))
        se += torch.sum((pred - y.to(device)) ** 2).item()
        n += y.numel()
    model.train()
    return math.sqrt(se / max(n, 1))


def fit(model, train_loader, val_loader, epochs, lr, out_dir, device="cuda"):
    os.makedirs(out_dir, exist_ok=True)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = nn.HuberLoss(delta=10.0)
    best_rmse = float("inf")
    epoch_rng = torch.get_rng_state()
    for epoch in range(epochs):
        torch.set_rng_state(epoch_rng)  # ruleid: MLS301
        running = 0.0
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item()
        scheduler.step()
        val_rmse = evaluate(model, val_loader, device)
        log.info("epoch %d train_loss %.3f val_rmse %.3f", epoch, running / len(train_loader), val_rmse)
        if val_rmse < best_rmse:
            best_rmse = val_rmse
            state = {"model": model.state_dict(), "epoch": epoch, "val_rmse": val_rmse}
            torch.save(state, os.path.join(out_dir, "best.pt"))  # ok: MLS306
    return best_rmse
