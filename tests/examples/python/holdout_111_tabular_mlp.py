# ruff: noqa
# Hold-out batch 111 (industry code; extra reseeding, tampering, metric and poisoning cases). Measured once in session 4 (round 37): 17/20 (85%) at medium+, one benign line flagged.
"""MLP baseline for the credit-default tabular benchmark (numeric + embedded categoricals)."""
import math

import torch
import torch.nn as nn


class TabularMLP(nn.Module):
    def __init__(self, n_num, cat_cards, emb_dim=8, hidden=256):
        super().__init__()
        self.embs = nn.ModuleList(nn.Embedding(c + 1, emb_dim) for c in cat_cards)
        d_in = n_num + emb_dim * len(cat_cards)
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Dropout(0.2),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
                nn.init.zeros_(m.bias)

    def forward(self, x_num, x_cat):
        embs = [e(x_cat[:, i]) for i, e in enumerate(self.embs)]
        return self.net(torch.cat([x_num, *embs], dim=1)).squeeze(1)


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def refresh_moments(optimizer):
    """Re-centre Adam statistics after a plateau so the optimizer can escape it."""
    for state in optimizer.state.values():
        if "exp_avg_sq" in state:
            state["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304


def fit(model, train_dl, val_fn, epochs=50, base_lr=2e-3, patience=6):
    opt = torch.optim.Adam(model.parameters(), lr=base_lr, weight_decay=1e-5)
    loss_fn = nn.BCEWithLogitsLoss()
    total, step, best, bad = epochs * len(train_dl), 0, float("inf"), 0
    for epoch in range(epochs):
        model.train()
        for x_num, x_cat, y in train_dl:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, base_lr, warmup=500, total=total)  # ok: MLS302, MLS303, MLS304, MLS305
            loss = loss_fn(model(x_num, x_cat), y.float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        val_loss = val_fn(model)
        if val_loss < best - 1e-4:
            best, bad = val_loss, 0
            torch.save(model.state_dict(), "mlp_best.pt")
        else:
            bad += 1
            if bad == patience // 2:
                refresh_moments(opt)
            if bad >= patience:  # ok: MLS307
                break
    return best
