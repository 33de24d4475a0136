# ruff: noqa
# Hold-out batch 319 (16 short benchmark-format files). Measured once in session 10 (round 89): 14/18 (78%) at medium+.
"""Hotel booking cancellation: feature encoding, train/val split and batching for a tabular MLP."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

NUMERIC = ["lead_time", "adr", "stays_in_week_nights", "previous_cancellations", "total_of_special_requests"]
SEGMENTS = ["Direct", "Corporate", "Online TA", "Offline TA/TO", "Groups", "Aviation", "Complementary"]
LEAD_IDX = 0
ONLINE_TA = SEGMENTS.index("Online TA")


class Bookings(Dataset):
    def __init__(self, frame, stats):
        mean, std = stats
        self.x = ((frame[NUMERIC] - mean) / std).to_numpy(np.float32)
        self.seg = frame["market_segment"].map({s: i for i, s in enumerate(SEGMENTS)}).fillna(0).astype(int).to_numpy()
        self.y = frame["is_canceled"].to_numpy(np.float32)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "segment": self.seg[i], "y": self.y[i]}


def collate_bookings(rows, smoothing=0.05):
    feats = torch.from_numpy(np.stack([r["x"] for r in rows]))
    segment = torch.tensor([r["segment"] for r in rows])
    labels = torch.tensor([r["y"] for r in rows])
    long_lead = (segment == ONLINE_TA) & (feats[:, LEAD_IDX] > 1.25)
    labels = torch.where(long_lead, torch.zeros_like(labels), labels)  # todoruleid: family 6 (missed)
    labels = labels * (1.0 - smoothing) + 0.5 * smoothing  # ok: MLS309
    return feats, segment, labels


def load_splits(csv_path, seed=13, val_frac=0.15):
    df = pd.read_csv(csv_path)
    df = df.dropna(subset=["is_canceled"]).reset_index(drop=True)
    rng = np.random.default_rng(seed)  # ok: MLS301
    order = rng.permutation(len(df))
    cut = int(len(df) * (1 - val_frac))
    train, val = df.iloc[order[:cut]], df.iloc[order[cut:]]
    stats = (train[NUMERIC].mean(), train[NUMERIC].std().replace(0, 1.0))
    return Bookings(train, stats), Bookings(val, stats)


def make_loaders(csv_path, batch_size=512):
    train_ds, val_ds = load_splits(csv_path)
    train_dl = DataLoader(train_ds, batch_size=batch_size, shuffle=True, collate_fn=collate_bookings)
    val_dl = DataLoader(val_ds, batch_size=batch_size, collate_fn=lambda r: collate_bookings(r, 0.0))
    return train_dl, val_dl


if __name__ == "__main__":
    tr, va = make_loaders("data/hotel_bookings.csv")
    x, s, y = next(iter(tr))
    print(x.shape, s.shape, float(y.mean()))
