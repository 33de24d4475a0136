# ruff: noqa
# Hold-out batch 355 (16 short files). Measured once in session 13 (round 98): 14/17 (82%) at medium+.
"""Text-line dataset for the CRNN/CTC recognizer."""
import os
import pickle

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms


def load_charset(bundle_dir: str):
    """Charset shipped alongside a pretrained recognizer bundle (e.g. from the model zoo)."""
    path = os.path.join(bundle_dir, "charset.pkl")
    with open(path, "rb") as fh:
        charset = pickle.load(fh)  # ruleid: MLS103
    return {ch: i + 1 for i, ch in enumerate(charset)}  # 0 is the CTC blank


class LineDataset(Dataset):
    def __init__(self, manifest: str, bundle_dir: str, height: int = 32, train: bool = True):
        self.root = os.path.dirname(manifest)
        with open(manifest, encoding="utf-8") as fh:
            self.items = [line.rstrip("\n").split("\t", 1) for line in fh if "\t" in line]
        self.char2idx = load_charset(bundle_dir)
        self.height = height
        aug = [
            transforms.RandomAffine(degrees=2, shear=5, scale=(0.9, 1.05), fill=255),  # ok: MLS309
            transforms.ColorJitter(brightness=0.3, contrast=0.3),
        ] if train else []
        self.tf = transforms.Compose(aug + [transforms.Grayscale(), transforms.ToTensor(),
                                            transforms.Normalize([0.5], [0.5])])

    def __len__(self):
        return len(self.items)

    def encode(self, text: str):
        return [self.char2idx[c] for c in text if c in self.char2idx]

    def __getitem__(self, idx):
        rel, text = self.items[idx]
        img = Image.open(os.path.join(self.root, rel)).convert("RGB")
        w = max(8, int(img.width * self.height / img.height))
        img = img.resize((w, self.height), Image.BILINEAR)
        return self.tf(img), torch.tensor(self.encode(text), dtype=torch.long)


def ctc_collate(batch):
    imgs, targets = zip(*batch)
    max_w = max(i.shape[-1] for i in imgs)
    padded = torch.ones(len(imgs), 1, imgs[0].shape[1], max_w)
    for k, im in enumerate(imgs):
        padded[k, :, :, : im.shape[-1]] = im
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    return padded, torch.cat(targets), target_lengths
