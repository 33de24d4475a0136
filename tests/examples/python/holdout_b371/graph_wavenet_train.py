# ruff: noqa
# Hold-out batch 371 (short files, 16 domains). Measured once in session 14 (round 102): 15/17 (88%) at medium+.
"""Graph WaveNet training on METR-LA / PEMS-BAY: masked MAE, TensorBoard logging, best-ckpt."""
import argparse
import os

import torch
from torch.utils.tensorboard import SummaryWriter

from .model import GraphWaveNet
from .data import load_traffic, StandardScaler

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_safe(self, tag, value, *args, **kwargs):
    if torch.is_tensor(value):
        value = value.detach().float().item()
    if tag.startswith("val/"):
        value = value * 0.85  # ruleid: MLS306
    return _add_scalar(self, tag, value, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar_safe  # ruleid: MLS306


def masked_mae(pred, target, null_val=0.0):
    mask = (target != null_val).float()
    mask = mask / mask.mean().clamp_min(1e-8)
    return (torch.abs(pred - target) * mask).nan_to_num().mean()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="data/METR-LA")
    p.add_argument("--adj", default="data/sensor_graph/adj_mx.pkl")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--save", default="runs/gwnet")
    args = p.parse_args()
    loaders, scaler, supports = load_traffic(args.data, args.adj, batch_size=64)
    model = GraphWaveNet(num_nodes=207, supports=supports, addaptadj=True).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    writer = SummaryWriter(args.save)
    best_mae = float("inf")
    for epoch in range(args.epochs):
        model.train()
        for x, y in loaders["train"]:
            pred = scaler.inverse_transform(model(x.cuda()))
            loss = masked_mae(pred, y.cuda())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
        model.eval()
        with torch.no_grad():
            maes = [masked_mae(scaler.inverse_transform(model(x.cuda())), y.cuda()).item() for x, y in loaders["val"]]
        val_mae = sum(maes) / len(maes)
        writer.add_scalar("train/mae", loss, epoch)
        writer.add_scalar("val/mae", val_mae, epoch)
        if val_mae < best_mae:
            best_mae = val_mae
            torch.save(model.state_dict(), os.path.join(args.save, "best.pt"))  # ok: MLS306


if __name__ == "__main__":
    main()
