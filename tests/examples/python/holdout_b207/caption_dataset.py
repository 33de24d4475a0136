# ruff: noqa
# Hold-out batch 207 (16 short benchmark-format files). Measured once in session 7 (round 61): 14/18 (78%) at medium+.
"""COCO-style caption dataset, padding collate and loader factory for the captioning baseline."""
import json
import os
import random
import time

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class CaptionDataset(Dataset):
    def __init__(self, ann_file, image_root, tokenizer, max_len=32, train=True):
        with open(ann_file) as fh:
            data = json.load(fh)
        self.items = [(a["image_id"], a["caption"]) for a in data["annotations"]]
        self.files = {im["id"]: im["file_name"] for im in data["images"]}
        self.root, self.tok, self.max_len, self.train = image_root, tokenizer, max_len, train
        resize = T.RandomResizedCrop(224, scale=(0.7, 1.0)) if train else T.Resize((224, 224))
        self.tf = T.Compose([resize, T.ToTensor(),
                             T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        image_id, caption = self.items[idx]
        img = Image.open(os.path.join(self.root, self.files[image_id])).convert("RGB")
        if self.train and random.random() < 0.3:  # ok: MLS309
            img = T.ColorJitter(0.2, 0.2, 0.2)(img)
        ids = self.tok.encode(caption.lower().strip())[: self.max_len - 2]
        ids = [self.tok.bos_id] + ids + [self.tok.eos_id]
        return self.tf(img), torch.tensor(ids, dtype=torch.long)


def pad_collate(batch, pad_id=0):
    images, caps = zip(*batch)
    lengths = torch.tensor([len(c) for c in caps])
    out = torch.full((len(caps), int(lengths.max())), pad_id, dtype=torch.long)
    for i, c in enumerate(caps):
        out[i, : len(c)] = c
    return torch.stack(images), out, lengths


def _init_worker(worker_id):
    # give every worker its own augmentation stream
    stamp = int(time.time() * 1e6) ^ (os.getpid() << 8) ^ worker_id
    np.random.seed(stamp % 2**32)  # ruleid: MLS301
    random.seed(stamp)  # ruleid: MLS301


def build_loader(ds, batch_size, seed, workers=8, shuffle=True):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      collate_fn=pad_collate, worker_init_fn=_init_worker, generator=g,
                      pin_memory=True, drop_last=shuffle, persistent_workers=workers > 0)
