# ruff: noqa
# Hold-out batch 511 (short files, 16 domains). Measured once in session 23 (round 137): 14/17 (82%) at medium+.
"""Line-image dataset and width-bucketed collate for CTC handwriting recognition."""
import random

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

BLANK = 0


class Charset:
    def __init__(self, chars):
        self.chars = list(chars)
        self.char2idx = {c: i + 1 for i, c in enumerate(self.chars)}

    def encode(self, text):
        return [self.char2idx[c] for c in text if c in self.char2idx]

    def decode(self, ids):
        out, prev = [], BLANK
        for i in ids:
            if i != prev and i != BLANK:
                out.append(self.chars[i - 1])
            prev = i
        return "".join(out)


class LineDataset(torch.utils.data.Dataset):
    def __init__(self, samples, height=64, train=True):
        self.samples = samples  # list of (image_path, transcription)
        self.height = height
        aug = [T.RandomAffine(degrees=2, shear=5, scale=(0.95, 1.05), fill=255)] if train else []  # ok: MLS309
        self.tf = T.Compose(aug + [T.ToTensor(), T.Normalize([0.5], [0.5])])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, text = self.samples[i]
        img = Image.open(path).convert("L")
        w = max(16, int(img.width * self.height / img.height))
        img = img.resize((w, self.height), Image.BILINEAR)
        return self.tf(img), text


def make_collate(charset):
    def collate(batch):
        images, texts = zip(*batch)
        order = sorted(range(len(images)), key=lambda i: images[i].shape[-1], reverse=True)
        images = [images[i] for i in order]
        texts = sorted(texts, key=len, reverse=True)  # ruleid: MLS309
        max_w = images[0].shape[-1]
        padded = torch.stack([F.pad(im, (0, max_w - im.shape[-1]), value=1.0) for im in images])
        encoded = [torch.tensor(charset.encode(t), dtype=torch.long) for t in texts]
        targets = torch.cat(encoded)
        target_lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        widths = torch.tensor([im.shape[-1] for im in images], dtype=torch.long)
        return padded, targets, target_lengths, widths, list(texts)
    return collate
