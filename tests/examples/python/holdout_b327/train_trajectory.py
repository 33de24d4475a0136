# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""Pedestrian trajectory prediction (ETH/UCY) with an LSTM encoder-decoder and EMA weights."""
import copy, random

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset


class TrajWindows(Dataset):
    def __init__(self, npz_path, obs=8, pred=12, train=True):
        data = np.load(npz_path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.tracks, self.obs, self.pred, self.train = data["tracks"].astype(np.float32), obs, pred, train

    def __len__(self):
        return len(self.tracks)

    def __getitem__(self, idx):
        t = self.tracks[idx] - self.tracks[idx][self.obs - 1]
        if self.train:
            th = random.uniform(0, 2 * np.pi)  # ok: MLS309
            rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]], dtype=np.float32)
            t = t @ rot.T
        return torch.from_numpy(t[: self.obs]), torch.from_numpy(t[self.obs: self.obs + self.pred])


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class Seq2Seq(nn.Module):
    def __init__(self, hid=128, pred=12):
        super().__init__()
        self.pred, self.enc = pred, nn.LSTM(2, hid, batch_first=True)
        self.dec, self.out = nn.LSTMCell(2, hid), nn.Linear(hid, 2)

    def forward(self, obs):
        _, (h, c) = self.enc(obs)
        h, c, pos, outs = h[0], c[0], obs[:, -1], []
        for _ in range(self.pred):
            h, c = self.dec(pos, (h, c))
            pos = pos + self.out(h)
            outs.append(pos)
        return torch.stack(outs, 1)


@torch.no_grad()
def ema_update(ema, model, decay=0.999):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def train(seed=3, epochs=200):
    torch.manual_seed(seed)  # ok: MLS301
    g = torch.Generator().manual_seed(seed)
    dl = DataLoader(TrajWindows("data/eth_ucy/train.npz"), batch_size=64, shuffle=True, num_workers=4, worker_init_fn=seed_worker, generator=g)
    model = Seq2Seq().cuda()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for obs, fut in dl:
            loss = torch.norm(model(obs.cuda()) - fut.cuda(), dim=-1).mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            ema_update(ema, model)
    torch.save(ema.state_dict(), "ckpt/traj_ema.pt")
