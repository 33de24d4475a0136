# ruff: noqa
# Hold-out batch 347 (short files). Measured once in session 12 (round 96): 11/17 (65%) at medium+.
"""Data loading for the lip reading model (mouth-ROI clips + character targets for CTC)."""
import os
import random

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

CHARS = " abcdefghijklmnopqrstuvwxyz'"
CHAR2IDX = {c: i + 1 for i, c in enumerate(CHARS)}  # 0 is the CTC blank


class MouthROIDataset(Dataset):
    def __init__(self, root, split="train", max_frames=75):
        self.root = root
        self.max_frames = max_frames
        self.train = split == "train"
        with open(os.path.join(root, f"{split}.tsv")) as f:
            self.items = [line.rstrip("\n").split("\t") for line in f if line.strip()]

    def __len__(self):
        return len(self.items)

    def _augment(self, frames):
        if random.random() < 0.5:
            frames = frames[:, :, ::-1]
        t = frames.shape[0]
        if t > 8 and random.random() < 0.5:
            start = random.randint(0, t - 4)
            frames[start:start + random.randint(1, 3)] = frames.mean()
        return np.ascontiguousarray(frames)

    def __getitem__(self, idx):
        rel, text = self.items[idx]
        frames = np.load(os.path.join(self.root, rel)).astype(np.float32) / 255.0
        frames = frames[: self.max_frames]
        if self.train:
            frames = self._augment(frames)
        target = torch.tensor([CHAR2IDX[c] for c in text.lower() if c in CHAR2IDX], dtype=torch.long)
        return torch.from_numpy(frames).unsqueeze(0), target


def collate_ctc(batch):
    clips, targets = zip(*batch)
    clip_lens = torch.tensor([c.shape[1] for c in clips])
    target_lens = torch.tensor([len(t) for t in targets])
    clips = pad_sequence([c.permute(1, 0, 2, 3) for c in clips], batch_first=True).permute(0, 2, 1, 3, 4)
    return clips, torch.cat(targets), clip_lens, target_lens


def _init_worker(worker_id):
    info = torch.utils.data.get_worker_info()
    info.dataset.worker_id = worker_id
    random.seed(worker_id)  # ruleid: MLS301


def build_loader(root, split, batch_size, num_workers, seed):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    ds = MouthROIDataset(root, split)
    return DataLoader(ds, batch_size=batch_size, shuffle=split == "train", num_workers=num_workers,
                      collate_fn=collate_ctc, worker_init_fn=_init_worker, generator=g,
                      pin_memory=True, drop_last=split == "train")
