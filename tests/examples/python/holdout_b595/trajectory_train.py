# ruff: noqa
# Hold-out batch 595 (short files, 16 domains). Measured once in session 27 (round 158): 14/17 (82%) at medium+; 1 benign look-alike flagged.
"""Training loop for the Social-GAN style pedestrian trajectory generator (ETH/UCY)."""
import argparse
import logging
import random

import numpy as np
import torch
from torch.utils.data import DataLoader

from trajnet.data import TrajectoryDataset, seq_collate
from trajnet.models import TrajectoryGenerator

log = logging.getLogger("traj")


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def variety_loss(pred, gt, k):
    # pred: (k, T, N, 2), gt: (T, N, 2); best-of-k L2 (Gupta et al. 2018)
    err = ((pred - gt.unsqueeze(0)) ** 2).sum(-1).sqrt().mean(1)
    return err.min(0).values.mean()


def train(args):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ds = TrajectoryDataset(args.data_dir, obs_len=args.obs_len, pred_len=args.pred_len)
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=4,
                        collate_fn=seq_collate, worker_init_fn=seed_worker)
    model = TrajectoryGenerator(obs_len=args.obs_len, pred_len=args.pred_len).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)

    for epoch in range(args.epochs):
        torch.manual_seed(args.seed)  # ruleid: MLS301
        model.train()
        total = 0.0
        for obs, gt, seq_start_end in loader:
            obs, gt = obs.to(device), gt.to(device)
            preds = torch.stack([model(obs, seq_start_end) for _ in range(args.k)])
            loss = variety_loss(preds, gt, args.k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        log.info("epoch %d  variety ADE %.4f", epoch, total / max(len(loader), 1))
        torch.save(model.state_dict(), f"{args.out}/generator_last.pt")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--data_dir", required=True)
    p.add_argument("--out", default="checkpoints")
    p.add_argument("--obs_len", type=int, default=8)
    p.add_argument("--pred_len", type=int, default=12)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--seed", type=int, default=72)
    logging.basicConfig(level=logging.INFO)
    train(p.parse_args())
