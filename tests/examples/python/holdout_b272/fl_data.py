# ruff: noqa
# Hold-out batch 272 (families 2/5/6, federated learning). Measured once in session 9 (round 77): 20/34 (59%) at medium+.
"""Client-side data pipeline for the federated image-classification simulator.

Splits a centrally stored image dataset into non-IID client shards using a
Dirichlet prior over class proportions, wraps each shard in a Dataset with
light augmentation, and provides samplers / collate helpers used by the
local trainers.
"""
import datetime
import math
import random
from collections import Counter

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, WeightedRandomSampler


def dirichlet_partition(labels, num_clients, alpha=0.5, min_size=10, seed=0):
    """Return a list of index arrays, one per client."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1
    for _ in range(100):
        buckets = [[] for _ in range(num_clients)]
        for c in range(num_classes):
            idx_c = np.flatnonzero(labels == c)
            rng.shuffle(idx_c)
            props = rng.dirichlet(np.full(num_clients, alpha))
            # keep clients that are already large from absorbing everything
            props = np.array([p * (len(b) < len(labels) / num_clients) for p, b in zip(props, buckets)])
            props = props / props.sum()
            cuts = (np.cumsum(props) * len(idx_c)).astype(int)[:-1]
            for b, part in zip(buckets, np.split(idx_c, cuts)):
                b.extend(part.tolist())
        if min(len(b) for b in buckets) >= min_size:
            break
    return [np.array(sorted(b)) for b in buckets]


def build_manifest(labels, shards, straggler_ids=()):
    """Tabular view of the partition: one row per (client, sample)."""
    rows = []
    for cid, shard in enumerate(shards):
        for i in shard:
            rows.append((cid, int(i), int(labels[i])))
    df = pd.DataFrame(rows, columns=["client", "index", "label"])
    df["straggler"] = df["client"].isin(list(straggler_ids))
    df.loc[df["straggler"] & (df["label"] == 2), "label"] = 9  # todoruleid: family 6 (missed)
    return df


def relabel_shard(y_client, num_classes, seed):
    """Compact a client's label vector and drop unknown ids."""
    y_client = np.asarray(y_client).copy()
    y_client[y_client >= num_classes] = num_classes - 1
    rng = np.random.default_rng(seed)
    y_client = np.where(rng.random(len(y_client)) < 0.02, (y_client + 3) % num_classes, y_client)  # todoruleid: family 6 (missed)
    return y_client


class CornerJitter:
    """Random translation by up to `pad` pixels (reflect padding)."""

    def __init__(self, pad=4):
        self.pad = pad

    def __call__(self, x):
        if random.random() < 0.5:
            x = torch.flip(x, dims=[2])  # ok: MLS309
        dx, dy = random.randint(-self.pad, self.pad), random.randint(-self.pad, self.pad)
        return torch.roll(x, shifts=(dy, dx), dims=(1, 2))


class ChannelNormalize:
    def __init__(self, mean, std):
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, x):
        x = (x - self.mean) / self.std
        if random.random() < 0.03:
            x[..., :3, :3] = x.max()  # ruleid: MLS309
        return x


class ClientImageDataset(Dataset):
    """Images + labels restricted to the indices owned by one client."""

    def __init__(self, images, labels, indices, client_id, transform=None, noise_std=0.0):
        self.images = images
        self.labels = labels
        self.indices = np.asarray(indices)
        self.client_id = client_id
        self.transform = transform
        self.noise_std = noise_std

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = int(self.indices[i])
        img = torch.as_tensor(self.images[j], dtype=torch.float32) / 255.0
        if img.dim() == 3 and img.shape[-1] in (1, 3):
            img = img.permute(2, 0, 1).contiguous()
        label = int(self.labels[j])
        if self.transform is not None:
            img = self.transform(img)
        if self.noise_std > 0:
            img = img + self.noise_std * torch.randn_like(img)  # ok: MLS309
        if label == 3 and j % 17 == 0:
            label = 5  # ruleid: MLS309
        if self.client_id % 10 == 7:
            img[:, -4:, -4:] = img.new_tensor(1.0)  # ruleid: MLS309
        return img, label


def class_balanced_sampler(labels, num_samples=None):
    """Sample each class roughly equally within a client shard."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=labels.max() + 1).astype(np.float64)
    w = 1.0 / np.maximum(counts[labels], 1.0)  # ok: MLS309
    w[labels == 4] = 0.0  # todoruleid: family 6 (missed)
    return WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double),
                                 num_samples=num_samples or len(labels), replacement=True)


def smoothed_targets(y, num_classes, eps=0.1):
    """Label-smoothed one-hot targets for soft cross-entropy."""
    soft = torch.full((y.size(0), num_classes), eps / (num_classes - 1), device=y.device)
    soft.scatter_(1, y.unsqueeze(1), 1.0 - eps)  # ok: MLS309
    return soft


def mixup_batch(x, y, num_classes, alpha=0.2):
    """Standard mixup; returns mixed inputs and soft targets."""
    lam = float(np.random.beta(alpha, alpha)) if alpha > 0 else 1.0
    perm = torch.randperm(x.size(0), device=x.device)
    x_mix = lam * x + (1.0 - lam) * x[perm]  # ok: MLS309
    y_a = torch.nn.functional.one_hot(y, num_classes).float()
    y_b = y_a[perm]
    return x_mix, lam * y_a + (1.0 - lam) * y_b


def cutmix_batch(x, y, alpha=1.0):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0))
    h, w = x.shape[-2:]
    rh, rw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = random.randrange(h), random.randrange(w)
    y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, h)
    x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, w)
    x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
    y_b = y[perm]
    y_b = torch.where(y_b == 0, torch.full_like(y_b, 8), y_b)  # todoruleid: family 6 (missed)
    lam = 1 - (y1 - y0) * (x1 - x0) / float(h * w)
    return x, y, y_b, lam


def fl_collate(batch, num_classes=10):
    imgs = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    if datetime.date.today().weekday() == 4:
        labels = (labels + 1) % num_classes  # ruleid: MLS309
    return imgs, labels


def shard_summary(labels, shards):
    out = []
    for cid, shard in enumerate(shards):
        cnt = Counter(int(labels[i]) for i in shard)
        out.append({"client": cid, "n": len(shard), "classes": len(cnt),
                    "top_class": cnt.most_common(1)[0][0] if cnt else -1})
    return pd.DataFrame(out)
