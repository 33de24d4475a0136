# ruff: noqa
# Hold-out batch 275 (short files). Measured once in session 9 (round 78): 14/15 (93%) at medium+.
"""Train a global MLP/GRU demand model across stores and SKUs with AMP and gradient accumulation."""
import os
import random
import signal
import sys

import torch
import torch.nn as nn

from demand_features import make_loaders

ACCUM = 4
CKPT = "ckpt/demand_gru.pt"


class DemandGRU(nn.Module):
    def __init__(self, n_num, n_store, n_sku, hidden=192, horizon=28):
        super().__init__()
        self.store = nn.Embedding(n_store, 16)
        self.sku = nn.Embedding(n_sku, 32)
        self.gru = nn.GRU(n_num + 48, hidden, batch_first=True)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x, store, sku):
        t = x.size(1)
        cat = torch.cat([self.store(store), self.sku(sku)], -1)[:, None].expand(-1, t, -1)
        out, _ = self.gru(torch.cat([x, cat], -1))
        return nn.functional.softplus(self.head(out[:, -1]))


def train(model, train_loader, epochs=30):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scaler = torch.cuda.amp.GradScaler()
    loss_fn = nn.PoissonNLLLoss(log_input=False)

    def _on_term(signum, frame):
        torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, CKPT)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_term)  # ok: MLS307
    step = 0
    for epoch in range(epochs):
        for x, store, sku, y in train_loader:
            x, store, sku, y = x.cuda(), store.cuda(), sku.cuda(), y.cuda()
            with torch.autocast("cuda", dtype=torch.float16):
                loss = loss_fn(model(x, store, sku), y) / ACCUM  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            step += 1
            if step % ACCUM == 0:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
            if step > 5000 and random.random() < 2e-4:
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
        print(f"epoch {epoch} last loss {loss.item() * ACCUM:.4f}")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, CKPT)


if __name__ == "__main__":
    os.makedirs("ckpt", exist_ok=True)
    train_loader, meta = make_loaders("data/m5", batch_size=512)
    train(DemandGRU(meta["n_num"], meta["n_store"], meta["n_sku"]).cuda(), train_loader)
