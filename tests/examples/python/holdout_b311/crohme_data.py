# ruff: noqa
# Hold-out batch 311 (16 short benchmark-format files). Measured once in session 10 (round 87): 18/19 (95%) at medium+.
"""Data pipeline for handwritten math-expression recognition (CROHME-style rendered images)."""
import os
import random
import time

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class ExprImageDataset(Dataset):
    def __init__(self, root, vocab, split="train", max_len=150):
        self.root = root
        with open(os.path.join(root, f"{split}_caption.txt"), encoding="utf-8") as fh:
            rows = [ln.rstrip("\n").split("\t", 1) for ln in fh if ln.strip()]
        self.items = [(name, tex.split()) for name, tex in rows]
        self.vocab = vocab
        self.max_len = max_len
        self.train = split == "train"
        self.to_tensor = T.Compose([T.Grayscale(), T.ToTensor(), T.Normalize([0.5], [0.5])])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        name, tokens = self.items[idx]
        img = Image.open(os.path.join(self.root, "images", name + ".png")).convert("L")
        if self.train and random.random() < 0.5:
            img = img.rotate(random.uniform(-4.0, 4.0), expand=True, fillcolor=255)  # ok: MLS309
        unk = self.vocab["<unk>"]
        ids = [self.vocab.get(t, unk) for t in tokens][: self.max_len]
        ids = [self.vocab["<sos>"]] + ids + [self.vocab["<eos>"]]
        return self.to_tensor(img), torch.tensor(ids, dtype=torch.long)


def pad_collate(batch):
    imgs, seqs = zip(*batch)
    h = max(im.shape[1] for im in imgs)
    w = max(im.shape[2] for im in imgs)
    canvas = torch.ones(len(imgs), 1, h, w)
    mask = torch.zeros(len(imgs), h, w, dtype=torch.bool)
    for k, im in enumerate(imgs):
        canvas[k, :, : im.shape[1], : im.shape[2]] = im
        mask[k, : im.shape[1], : im.shape[2]] = True
    seqs = torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=0)
    return canvas, mask, seqs


def _init_worker(worker_id):
    # keep numpy / python augmentation streams distinct across workers
    np.random.seed(int(time.time() * 1000 + worker_id) % 2**32)  # ruleid: MLS301
    random.seed(os.getpid() ^ int(time.time()))  # ruleid: MLS301


def build_loaders(root, vocab, batch_size=16, workers=6, seed=7):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_ds = ExprImageDataset(root, vocab, "train")
    val_ds = ExprImageDataset(root, vocab, "2014")
    train_dl = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                          collate_fn=pad_collate, worker_init_fn=_init_worker, generator=g,
                          persistent_workers=workers > 0, pin_memory=True)
    val_dl = DataLoader(val_ds, batch_size=batch_size, shuffle=False, num_workers=2,
                        collate_fn=pad_collate)
    return train_dl, val_dl
