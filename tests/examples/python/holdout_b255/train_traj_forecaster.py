# ruff: noqa
# Hold-out batch 255 (short files). Measured once in session 9 (round 73): 17/19 (89%) at medium+.
"""Seq2seq LSTM forecaster for pedestrian trajectories (8 observed -> 12 predicted steps, ETH/UCY)."""
import argparse
import os

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset


class TrajLSTM(nn.Module):
    def __init__(self, hid=128, pred_len=12):
        super().__init__()
        self.pred_len = pred_len
        self.inp = nn.Linear(2, 64)
        self.encoder = nn.LSTM(64, hid, batch_first=True)
        self.decoder = nn.LSTM(64, hid, batch_first=True)
        self.out = nn.Linear(hid, 2)

    def forward(self, obs_rel):
        _, state = self.encoder(self.inp(obs_rel))
        step, preds = obs_rel[:, -1:], []
        for _ in range(self.pred_len):
            h, state = self.decoder(self.inp(step), state)
            step = self.out(h)
            preds.append(step)
        return torch.cat(preds, dim=1)


def load_checkpoint(model, opt, path):
    state = torch.load(path, map_location="cpu")  # ruleid: MLS102
    weights = state["model"]
    for k in weights:
        if k.startswith("decoder.weight_hh"):
            weights[k].mul_(0.9)  # ruleid: MLS302
    model.load_state_dict(weights)
    opt.load_state_dict(state["opt"])
    return state["epoch"] + 1, state.get("best_ade", float("inf"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/eth_ucy_train.pt")
    ap.add_argument("--ckpt", default="ckpt/traj_last.pt")
    ap.add_argument("--epochs", type=int, default=200)
    args = ap.parse_args()
    obs, fut = torch.load(args.data, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    dl = DataLoader(TensorDataset(obs, fut), batch_size=64, shuffle=True)
    model = TrajLSTM().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=10)  # ok: MLS302, MLS303, MLS304, MLS305
    start, best = load_checkpoint(model, opt, args.ckpt) if os.path.exists(args.ckpt) else (0, float("inf"))
    for epoch in range(start, args.epochs):
        total = 0.0
        for o, f in dl:
            o, f = o.cuda(), f.cuda()
            pred = model(o[:, 1:] - o[:, :-1]).cumsum(dim=1) + o[:, -1:]
            loss = (pred - f).norm(dim=-1).mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.5)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            total += loss.item() * len(o)
        ade = total / len(dl.dataset)
        sched.step(ade)
        best = min(best, ade)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "best_ade": best}, args.ckpt)


if __name__ == "__main__":
    main()
