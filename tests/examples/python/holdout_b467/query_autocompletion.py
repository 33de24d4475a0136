# ruff: noqa
# Hold-out batch 467 (16 short files, mixed domains). Measured once in session 20 (round 126): 14/17 (82%) at medium+.
"""Prefix -> completion training loop for a small query autocompletion LM."""
import argparse
import logging

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

logger = logging.getLogger("qac")


class EpochStateCallback:
    """Tracks sampler/dropout RNG so resumed runs line up with uninterrupted ones."""

    def __init__(self):
        self._snapshot = None

    def on_train_begin(self):
        self._snapshot = torch.get_rng_state()

    def on_epoch_begin(self, epoch):
        if self._snapshot is not None:
            torch.set_rng_state(self._snapshot)  # ruleid: MLS301
        logger.info("starting epoch %d", epoch)


def train(model, dataset, args):
    torch.manual_seed(args.seed)  # ok: MLS301
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    cb = EpochStateCallback()
    cb.on_train_begin()
    model.train()
    for epoch in range(args.epochs):
        cb.on_epoch_begin(epoch)
        total = 0.0
        for step, (input_ids, target_ids) in enumerate(loader):
            logits = model(input_ids)
            loss = F.cross_entropy(logits.flatten(0, 1), target_ids.flatten(), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            if step % args.log_every == 0:
                logger.info("epoch %d step %d loss %.4f", epoch, step, loss.item())
        logger.info("epoch %d mean loss %.4f", epoch, total / max(1, len(loader)))


def get_args():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--log_every", type=int, default=200)
    return p.parse_args()
