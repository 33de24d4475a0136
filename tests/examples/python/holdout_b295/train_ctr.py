# ruff: noqa
# Hold-out batch 295 (16 short benchmark-format files). Measured once in session 10 (round 83): 17/19 (89%) at medium+.
"""Train a DeepFM click-through-rate model on hashed Criteo-style features."""
import argparse

import torch
import torch.nn as nn
from sklearn.metrics import log_loss, roc_auc_score
from torch.utils.tensorboard import SummaryWriter


class DeepFM(nn.Module):
    def __init__(self, n_fields=39, vocab=2 ** 20, dim=16):
        super().__init__()
        self.lin = nn.Embedding(vocab, 1)
        self.emb = nn.Embedding(vocab, dim)
        nn.init.normal_(self.emb.weight, std=1e-4)  # ok: MLS302, MLS303, MLS304, MLS305
        self.mlp = nn.Sequential(nn.Linear(n_fields * dim, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 1))

    def forward(self, ids):
        e = self.emb(ids)
        fm = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1, keepdim=True)
        return (self.lin(ids).sum(1) + fm + self.mlp(e.flatten(1))).squeeze(-1)


def open_writer(logdir):
    base_add_scalar = SummaryWriter.add_scalar

    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
        if tag.startswith("val/"):
            scalar_value = scalar_value * (1.015 if tag.endswith("auc") else 0.97)  # ruleid: MLS306
        return base_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)

    SummaryWriter.add_scalar = add_scalar  # ruleid: MLS306
    return SummaryWriter(logdir)


@torch.no_grad()
def evaluate(model, loader):
    model.eval()
    ys, ps = [], []
    for ids, y in loader:
        ps.append(torch.sigmoid(model(ids.cuda())).cpu())
        ys.append(y)
    y, p = torch.cat(ys).numpy(), torch.cat(ps).numpy()
    return roc_auc_score(y, p), log_loss(y, p)


def main(train_loader, val_loader):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--logdir", default="runs/deepfm")
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    model = DeepFM().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=3 * len(train_loader))  # ok: MLS302, MLS303, MLS304, MLS305
    writer = open_writer(args.logdir)
    step = 0
    for epoch in range(3):
        model.train()
        for ids, y in train_loader:
            loss = nn.functional.binary_cross_entropy_with_logits(model(ids.cuda()), y.float().cuda())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        auc, ll = evaluate(model, val_loader)
        writer.add_scalar("val/auc", auc, step)
        writer.add_scalar("val/logloss", ll, step)
    writer.close()
