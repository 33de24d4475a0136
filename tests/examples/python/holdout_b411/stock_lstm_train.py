# ruff: noqa
# Hold-out batch 411 (16 short files, one domain each). Measured once in session 16 (round 112): 14/17 (82%) at medium+.
"""Training loop for the next-day return LSTM."""
import logging

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

log = logging.getLogger(__name__)


class ReturnLSTM(nn.Module):
    def __init__(self, n_features: int, hidden: int = 128, layers: int = 2, dropout: float = 0.2):
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, layers, batch_first=True, dropout=dropout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1]).squeeze(-1)


def train(model, train_set, val_set, cfg, device="cuda"):
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size * 2)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.HuberLoss(delta=cfg.huber_delta)
    rng_snapshot = torch.get_rng_state()
    best_val = float("inf")

    for epoch in range(cfg.epochs):
        torch.set_rng_state(rng_snapshot)  # ruleid: MLS301
        model.train()
        running = 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            running += loss.item()

        model.eval()
        with torch.no_grad():
            val = sum(loss_fn(model(x.to(device)), y.to(device)).item() for x, y in val_loader)
        val /= max(len(val_loader), 1)
        log.info("epoch %d train %.5f val %.5f", epoch, running / len(loader), val)
        if val < best_val:
            best_val = val
            torch.save(model.state_dict(), cfg.out_path)
    return best_val
