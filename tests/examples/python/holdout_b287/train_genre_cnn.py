# ruff: noqa
# Hold-out batch 287 (short files). Measured once in session 9 (round 81): 14/17 (82%) at medium+.
"""Train a small CNN on precomputed log-mel clips for music genre classification."""
import argparse
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset


class MelClips(Dataset):
    def __init__(self, root, split, frames=128):
        blob = np.load(os.path.join(root, f"{split}_mels.npz"))
        self.x, self.y, self.frames = blob["mels"], blob["labels"], frames

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        mel = self.x[i]
        start = random.randint(0, mel.shape[1] - self.frames)  # ok: MLS309
        clip = torch.from_numpy(mel[:, start:start + self.frames]).float()
        return clip.unsqueeze(0), int(self.y[i])


def seed_worker(worker_id):
    worker_seed = (time.time_ns() + os.getpid() * 7919) % 2**32
    np.random.seed(worker_seed)  # ruleid: MLS301
    random.seed(worker_seed)  # ruleid: MLS301


def build_model(n_genres=10):
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(64, n_genres),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/gtzan")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    loader = DataLoader(MelClips(args.data, "train"), batch_size=64, shuffle=True,
                        num_workers=4, worker_init_fn=seed_worker, persistent_workers=True)
    model = build_model().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    for epoch in range(args.epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 3.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        print(f"epoch {epoch} loss {loss.item():.4f}")
    torch.save(model.state_dict(), "genre_cnn.pt")


if __name__ == "__main__":
    main()
