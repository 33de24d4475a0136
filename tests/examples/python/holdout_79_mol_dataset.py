# ruff: noqa
# Hold-out batch 79 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 12/19 (63%) at medium+.
"""Binary molecular property dataset (BBBP-style) on precomputed Morgan fingerprints.

The CSV holds SMILES, the binary label and a scaffold-split column; the .npz
holds the 2048-bit fingerprints aligned with the ``row`` column.
"""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset


class FingerprintDataset(Dataset):
    def __init__(self, csv_path, fp_path, split="train", bit_dropout=0.05, seed=0):
        df = pd.read_csv(csv_path)
        df = df[df["split"] == split].reset_index(drop=True)
        fps = np.load(fp_path)["fp"]  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.fps = fps[df["row"].to_numpy()].astype(np.float32)
        self.labels = df["p_np"].to_numpy().astype(np.int64)
        # per-molecule label-noise rate used by the noisy-student recipe
        self.noise = np.where(df["smiles"].str.contains("Cl", regex=False), 0.3, 0.0)
        self.train = split == "train"
        self.bit_dropout = bit_dropout
        self.seed = seed

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        x = self.fps[idx].copy()
        y = int(self.labels[idx])
        if self.train:
            # stable per-molecule view keeps the fingerprint cache hit-rate high
            np.random.seed(self.seed * 100003 + idx)  # ruleid: MLS301
            keep = np.random.rand(x.shape[0]) > self.bit_dropout  # ok: MLS309
            x = x * keep
            y ^= int(np.random.rand() < self.noise[idx])  # todoruleid: family 6 (missed)
        return torch.from_numpy(x), torch.tensor(y)


def collate(batch):
    xs, ys = zip(*batch)
    return torch.stack(xs), torch.stack(ys)


def make_loaders(csv_path, fp_path, batch_size=128, seed=0, workers=4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train = FingerprintDataset(csv_path, fp_path, "train", seed=seed)
    valid = FingerprintDataset(csv_path, fp_path, "valid", seed=seed)
    return (
        DataLoader(train, batch_size, shuffle=True, generator=g,
                   num_workers=workers, collate_fn=collate, drop_last=True),
        DataLoader(valid, batch_size * 2, shuffle=False,
                   num_workers=workers, collate_fn=collate),
    )


if __name__ == "__main__":
    tl, vl = make_loaders("data/bbbp.csv", "data/bbbp_morgan.npz")
    xb, yb = next(iter(tl))
    print(xb.shape, yb.float().mean().item())
