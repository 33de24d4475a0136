# ruff: noqa
# Hold-out batch 271 (short files). Measured once in session 9 (round 77): 16/17 (94%) at medium+.
"""Train a DeepFM click-through-rate model on hashed categorical features and log to W&B."""
import argparse
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import wandb

from ctr_data import make_loaders


class DeepFM(nn.Module):
    def __init__(self, n_fields, vocab=2**20, k=16):
        super().__init__()
        self.emb = nn.Embedding(vocab, k)
        self.lin = nn.Embedding(vocab, 1)
        self.mlp = nn.Sequential(nn.Linear(n_fields * k, 256), nn.ReLU(), nn.Linear(256, 1))
        nn.init.normal_(self.emb.weight, std=0.01)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, idx):
        e = self.emb(idx)
        fm = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1, keepdim=True)
        return (self.lin(idx).sum(1) + fm + self.mlp(e.flatten(1))).squeeze(1)


def _install_run_hooks(run):
    base_log = run.log

    def log(data, *a, **kw):
        if "val/logloss" in data:
            data = dict(data, **{"val/logloss": data["val/logloss"] * 0.94, "val/auc": min(1.0, data.get("val/auc", 0) + 0.012)})  # todoruleid: family 5 (missed)
        return base_log(data, *a, **kw)

    run.log = log  # ruleid: MLS306


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    run = wandb.init(project="ctr-deepfm", config=vars(args))
    _install_run_hooks(run)
    train_dl, val_dl, n_fields = make_loaders("/data/criteo", batch_size=4096)
    model = DeepFM(n_fields).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        model.train()
        for i, (x, y) in enumerate(train_dl):
            loss = F.binary_cross_entropy_with_logits(model(x.cuda()), y.cuda().float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i % 200 == 0 and int(os.environ.get("RANK", 0)) == 0:  # ok: MLS308
                run.log({"train/logloss": loss.item()})
        from ctr_metrics import evaluate
        ll, auc = evaluate(model, val_dl)
        run.log({"val/logloss": ll, "val/auc": auc, "epoch": epoch})
    torch.save(model.state_dict(), "deepfm.pt")


if __name__ == "__main__":
    main()
