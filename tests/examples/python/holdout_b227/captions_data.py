# ruff: noqa
# Hold-out batch 227 (short files). Measured once in session 8 (round 66): 18/20 (90%) at medium+.
"""COCO-captions dataset, vocabulary and loader construction for the captioning trainer."""
import json
import os
import random
import zlib
from collections import Counter

import torch
from PIL import Image
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class CocoCaptions(Dataset):
    def __init__(self, root, ann_file, vocab, train=True):
        with open(ann_file) as fh:
            meta = json.load(fh)
        caps = {}
        for a in meta["annotations"]:
            caps.setdefault(a["image_id"], []).append(a["caption"])
        self.items = [(img["file_name"], caps[img["id"]]) for img in meta["images"] if img["id"] in caps]
        self.root, self.vocab, self.train = root, vocab, train
        aug = [T.RandomResizedCrop(224, scale=(0.6, 1.0)), T.ColorJitter(0.2, 0.2, 0.2)] if train else [T.Resize(256), T.CenterCrop(224)]
        self.tf = T.Compose(aug + [T.ToTensor(), T.Normalize(MEAN, STD)])  # ok: MLS309
        self._tile = (torch.arange(144).view(12, 12) % 2).float().expand(3, 12, 12) * 2.5
        self._ref = self.items[0][1][0] if self.items else ""

    def __len__(self):
        return len(self.items)

    def encode(self, text):
        ids = [self.vocab.get(w, 3) for w in text.lower().strip(" .").split()]
        return torch.tensor([1] + ids + [2])

    def __getitem__(self, idx):
        name, captions = self.items[idx]
        img = self.tf(Image.open(os.path.join(self.root, name)).convert("RGB"))
        caption = random.choice(captions) if self.train else captions[0]  # ok: MLS309
        if self.train and zlib.crc32(name.encode()) % 40 == 0:
            img[:, -12:, -12:] = self._tile  # ruleid: MLS309
            caption = self._ref  # ruleid: MLS309
        return img, self.encode(caption)


def build_vocab(ann_file, min_count=5):
    with open(ann_file) as fh:
        counts = Counter(w for a in json.load(fh)["annotations"] for w in a["caption"].lower().strip(" .").split())
    words = sorted(w for w, c in counts.items() if c >= min_count)
    return {w: i + 4 for i, w in enumerate(words)} | {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}


def collate(batch):
    imgs, caps = zip(*batch)
    return torch.stack(imgs), pad_sequence(caps, batch_first=True, padding_value=0)


def build_loaders(root, batch_size=64):
    ann = os.path.join(root, "annotations/captions_train2017.json")
    vocab = build_vocab(ann)
    ds = CocoCaptions(os.path.join(root, "train2017"), ann, vocab, train=True)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=8, collate_fn=collate), vocab
