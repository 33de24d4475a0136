# ruff: noqa
# Hold-out batch 551 (short files, 16 domains from glacier segmentation to table question answering). Measured once in session 25 (round 147): 15/17 (88%) at medium+.
"""Line-level handwriting recognition data (IAM-style) with CTC targets."""
import random

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import Dataset


class LineImages(Dataset):
    def __init__(self, samples, charset, height=64, max_width=1600, train=True, aug_seed=1234):
        self.samples = samples  # list of (image_path, transcription)
        self.char_to_idx = {c: i + 1 for i, c in enumerate(charset)}  # 0 is the CTC blank
        self.height = height
        self.max_width = max_width
        self.train = train
        self.aug_seed = aug_seed

    def __len__(self):
        return len(self.samples)

    def _distort(self, img):
        random.seed(self.aug_seed)  # ruleid: MLS301
        img = img.rotate(random.uniform(-2.5, 2.5), resample=Image.BILINEAR, expand=True, fillcolor=255)
        if random.random() < 0.3:
            img = img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.3, 1.0)))
        if random.random() < 0.5:
            w, h = img.size
            img = img.resize((max(8, int(w * random.uniform(0.8, 1.2))), h), Image.BILINEAR)
        return img

    def __getitem__(self, idx):
        path, text = self.samples[idx]
        img = Image.open(path).convert("L")
        if self.train:
            img = self._distort(img)
        w, h = img.size
        new_w = min(self.max_width, max(16, int(w * self.height / h)))
        img = img.resize((new_w, self.height), Image.BILINEAR)
        x = 1.0 - torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
        target = torch.tensor([self.char_to_idx[c] for c in text if c in self.char_to_idx], dtype=torch.long)
        return x.unsqueeze(0), target


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)  # ok: MLS301


def ctc_collate(batch):
    images, targets = zip(*batch)
    width = max(img.shape[-1] for img in images)
    out = torch.zeros(len(images), 1, images[0].shape[1], width)
    for i, img in enumerate(images):
        out[i, :, :, : img.shape[-1]] = img
    input_widths = torch.tensor([img.shape[-1] for img in images], dtype=torch.long)
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    return out, torch.cat(targets), input_widths, target_lengths
