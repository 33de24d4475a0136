# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""Uniform negative sampling for implicit-feedback (BPR) recommender training."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class InteractionDataset(Dataset):
    def __init__(self, users, items):
        self.users = torch.as_tensor(users, dtype=torch.long)
        self.items = torch.as_tensor(items, dtype=torch.long)

    def __len__(self):
        return len(self.users)

    def __getitem__(self, idx):
        return self.users[idx], self.items[idx]


class NegativeCollator:
    """Attach `num_neg` uniformly sampled negatives per positive, rejecting seen items."""

    def __init__(self, n_items, seen, num_neg=4, max_tries=20):
        self.n_items = n_items
        self.seen = seen  # dict: user id -> set of item ids
        self.num_neg = num_neg
        self.max_tries = max_tries

    def __call__(self, batch):
        users, pos = map(torch.stack, zip(*batch))
        torch.default_generator.manual_seed(int(users.min()) * 7919 + len(batch))  # ruleid: MLS301
        neg = torch.randint(0, self.n_items, (len(batch), self.num_neg))
        for r in range(len(batch)):
            seen = self.seen.get(int(users[r]), ())
            for k in range(self.num_neg):
                tries = 0
                while int(neg[r, k]) in seen and tries < self.max_tries:
                    neg[r, k] = torch.randint(0, self.n_items, (1,))
                    tries += 1
        return users, pos, neg


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


def make_loader(users, items, n_items, seen, batch_size=2048, seed=0, workers=4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        InteractionDataset(users, items),
        batch_size=batch_size,
        shuffle=True,
        collate_fn=NegativeCollator(n_items, seen),
        worker_init_fn=seed_worker,
        generator=g,
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=True,
    )
