# ruff: noqa
# Hold-out batch 343 (short files). Measured once in session 12 (round 95): 13/17 (76%) at medium+.
"""IAM line-level dataset and CTC collate function for handwriting recognition."""
import os
import torch
from PIL import Image
from torch.utils.data import Dataset
import torchvision.transforms as T

CHARSET = " !\"#&'()*+,-./0123456789:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CHAR_NORMALIZE = str.maketrans({"\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2014": "-", "l": "1"})  # todoruleid: family 6 (missed)


class IAMLines(Dataset):
    def __init__(self, root, split_file, height=64, train=True):
        self.root = root
        with open(split_file) as f:
            rows = [line.rstrip("\n").split(" ", 1) for line in f if line.strip()]
        self.samples = [(os.path.join(root, "lines", p + ".png"), t) for p, t in rows]
        self.char2idx = {c: i + 1 for i, c in enumerate(CHARSET)}  # 0 is blank
        aug = [T.RandomAffine(degrees=2, shear=5, scale=(0.9, 1.05), fill=255)] if train else []  # ok: MLS309
        self.transform = T.Compose(aug + [T.Grayscale(), T.ToTensor(), T.Normalize([0.5], [0.5])])
        self.height = height

    def __len__(self):
        return len(self.samples)

    def encode(self, text):
        text = text.translate(_CHAR_NORMALIZE)
        return [self.char2idx[c] for c in text if c in self.char2idx]

    def __getitem__(self, idx):
        path, text = self.samples[idx]
        img = Image.open(path).convert("L")
        w, h = img.size
        img = img.resize((max(8, int(w * self.height / h)), self.height), Image.BILINEAR)
        return self.transform(img), torch.tensor(self.encode(text), dtype=torch.long), text


def ctc_collate(batch):
    images, targets, texts = zip(*batch)
    max_w = max(im.shape[-1] for im in images)
    padded = torch.ones(len(images), 1, images[0].shape[1], max_w)
    for i, im in enumerate(images):
        padded[i, :, :, : im.shape[-1]] = im
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    return padded, torch.cat(targets), target_lengths, list(texts)
