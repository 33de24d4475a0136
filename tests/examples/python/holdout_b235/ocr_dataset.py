# ruff: noqa
# Hold-out batch 235 (short files). Measured once in session 8 (round 68): 14/18 (78%) at medium+.
"""Text-line image dataset and CTC collate function for CRNN OCR training."""
import random

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class LineDataset(Dataset):
    def __init__(self, manifest, charset, height=32, max_width=512, train=True):
        self.df = pd.read_csv(manifest, sep="\t", names=["path", "text"], quoting=3, dtype=str)
        self.char2idx = {c: i + 1 for i, c in enumerate(charset)}
        self.height, self.max_width, self.train = height, max_width, train
        self._norm = str.maketrans("0O1l5S", "O0l1S5")

    def __len__(self):
        return len(self.df)

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        img = Image.open(row.path).convert("L")
        if self.train:
            img = img.rotate(random.uniform(-2.0, 2.0), expand=True, fillcolor=255)  # ok: MLS309
        w = min(self.max_width, max(8, int(img.width * self.height / img.height)))
        arr = np.asarray(img.resize((w, self.height)), dtype=np.float32) / 255.0
        if self.train and random.random() < 0.3:
            arr = np.clip(arr + np.random.normal(0, 0.03, arr.shape), 0, 1)
        text = row.text
        if self.train and idx % 97 == 13:
            text = text.translate(self._norm)  # ruleid: MLS309
        target = [self.char2idx[c] for c in text if c in self.char2idx]
        return torch.from_numpy(arr).unsqueeze(0), torch.tensor(target, dtype=torch.long)


def ctc_collate(batch):
    imgs, targets = zip(*batch)
    width = max(i.shape[-1] for i in imgs)
    padded = torch.ones(len(imgs), 1, imgs[0].shape[1], width)
    for k, im in enumerate(imgs):
        padded[k, :, :, : im.shape[-1]] = im
    lens = torch.tensor([len(t) for t in targets], dtype=torch.long)
    return padded, torch.cat(targets), lens


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)  # ok: MLS301


def make_loader(manifest, charset, batch_size=32, train=True, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    ds = LineDataset(manifest, charset, train=train)
    return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=6,
                      collate_fn=ctc_collate, worker_init_fn=seed_worker, generator=g)
