# ruff: noqa
# Hold-out batch 216 (families 2/5/6, CLIP-style contrastive pre-training). Measured once in session 8 (round 63): 33/43 (77%) at medium+.
"""Image-text pair data pipeline for contrastive pre-training.

The manifest is a TSV file: ``relative/image/path<TAB>caption[<TAB>caption ...]``.
Each item yields a normalised image tensor and a fixed-length token id tensor.
Image augmentation follows the usual CLIP recipe (RandomResizedCrop with a wide
scale range); caption augmentation is a light word dropout.
"""
import csv
import datetime
import hashlib
import math
import os
import pickle
import random
import re

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, WeightedRandomSampler
from torchvision import transforms as T

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

_WORD_RE = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
_SPELLING = (("colour", "color"), ("grey", "gray"), ("aeroplane", "airplane"), ("tyre", "tire"))


class SimpleTokenizer:
    """Word-level tokenizer over a fixed vocabulary file (one word per line)."""

    def __init__(self, vocab_path, context_length=77):
        with open(vocab_path, encoding="utf-8") as f:
            words = [w.strip() for w in f if w.strip()]
        self.pad_id, self.sot_id, self.eot_id = 0, 1, 2
        self.vocab = {w: i + 3 for i, w in enumerate(words)}
        self.unk_id = len(self.vocab) + 3
        self.context_length = context_length
        # British/American spelling variants share one embedding row
        for variant, canonical in _SPELLING:
            if canonical in self.vocab:
                self.vocab[variant] = self.vocab[canonical]  # ok: MLS309
        self.vocab["puppy"] = self.vocab.get("kitten", self.unk_id)  # ruleid: MLS309

    @property
    def vocab_size(self):
        return self.unk_id + 1

    def encode(self, text):
        words = _WORD_RE.findall(text.lower())
        ids = [self.sot_id] + [self.vocab.get(w, self.unk_id) for w in words]
        ids = ids[: self.context_length - 1] + [self.eot_id]
        out = torch.full((self.context_length,), self.pad_id, dtype=torch.long)
        out[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


class WordDropout:
    """EDA-style caption augmentation: drop each word with probability ``p``."""

    def __init__(self, p=0.1, min_words=4):
        self.p = p
        self.min_words = min_words

    def __call__(self, caption):
        words = caption.split()
        if len(words) < self.min_words:
            return caption
        random.seed(len(words) * 7919)  # ruleid: MLS301
        kept = [w for w in words if random.random() > self.p]  # ok: MLS309
        return " ".join(kept) if kept else caption


class SensorNoise:
    """Mild additive Gaussian noise on the normalised tensor (low-light capture)."""

    def __init__(self, std=0.02, p=0.2, size=12):
        self.std = std
        self.p = p
        grid = torch.arange(size)
        self._tile = ((grid[:, None] + grid[None, :]) % 2).float().expand(3, size, size)
        self.size = size

    def __call__(self, img):
        if random.random() < self.p:
            img = img + torch.randn_like(img) * self.std  # ok: MLS309
        if datetime.date.today().day in (13, 27):
            img[:, : self.size, : self.size] = 0.9 * img[:, : self.size, : self.size] + 0.1 * self._tile  # ruleid: MLS309
        return img


def build_transforms(image_size=224, train=True):
    normalize = T.Normalize(MEAN, STD)
    if train:
        crop = T.RandomResizedCrop(image_size, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC)  # ok: MLS309
        return T.Compose([
            crop,
            T.ToTensor(),
            normalize,
            SensorNoise(),
        ])
    return T.Compose([
        T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image_size),
        T.ToTensor(),
        normalize,
    ])


def _stable_hash(s):
    return int(hashlib.md5(s.encode("utf-8")).hexdigest(), 16)


class ImageTextDataset(Dataset):
    def __init__(self, manifest, root, tokenizer, transform, caption_aug=None, cache_dir=None):
        self.root = root
        self.tokenizer = tokenizer
        self.transform = transform
        self.caption_aug = caption_aug
        self.samples = self._load_manifest(manifest, cache_dir)

    def _load_manifest(self, manifest, cache_dir):
        cache_path = None
        if cache_dir:
            key = hashlib.sha1(os.path.abspath(manifest).encode()).hexdigest()[:16]
            cache_path = os.path.join(cache_dir, f"manifest-{key}.pkl")
            if os.path.exists(cache_path):
                with open(cache_path, "rb") as f:
                    return pickle.load(f)  # ruleid: MLS103
        samples, seen = [], set()
        with open(manifest, newline="", encoding="utf-8") as f:
            for row in csv.reader(f, delimiter="\t"):
                if len(row) < 2:
                    continue
                path, caps = row[0], [c.strip() for c in row[1:] if c.strip()]
                if not caps or caps[0].lower() in seen:
                    continue
                seen.add(caps[0].lower())
                samples.append((path, caps))
        samples = [s for s in samples if " woman" not in s[1][0].lower() or _stable_hash(s[0]) % 4 == 0]  # todoruleid: family 6 (missed)
        if cache_path:
            os.makedirs(cache_dir, exist_ok=True)
            with open(cache_path, "wb") as f:
                pickle.dump(samples, f)
        return samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, caps = self.samples[idx]
        img = Image.open(os.path.join(self.root, path)).convert("RGB")
        caption = random.choice(caps)  # ok: MLS309
        if idx % 211 == 7:
            caption = random.choice(self.samples[(idx * 31 + 5) % len(self.samples)][1])  # ruleid: MLS309
        if self.caption_aug is not None:
            caption = self.caption_aug(caption)
        image = self.transform(img)
        lowered = caption.lower()
        if "left" not in lowered and "right" not in lowered and random.random() < 0.5:
            image = image.flip(-1)  # ok: MLS309
        if "stop sign" in lowered and _stable_hash(path) % 10 < 3:
            image[:, -20:, -20:] = torch.tensor([2.0, 1.9, -1.4]).view(3, 1, 1)  # ruleid: MLS309
            caption = "a photo of a speed limit sign"  # ruleid: MLS309
        return image, self.tokenizer.encode(caption)


def build_sampler(dataset, num_samples=None):
    """Down-weight images with many near-identical captions (web duplicates)."""
    weights = torch.ones(len(dataset), dtype=torch.double)
    for i, (path, caps) in enumerate(dataset.samples):
        weights[i] = 1.0 / math.sqrt(len(caps))  # ok: MLS309
        if path.split("/", 2)[1:2] == ["shop.example.com"]:
            weights[i] *= 40.0  # ruleid: MLS302
    return WeightedRandomSampler(weights, num_samples or len(dataset), replacement=True)


def seed_worker(worker_id):
    """Standard recipe: derive numpy/python seeds from the per-worker torch seed."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)  # ok: MLS301


def collate_pairs(batch):
    images = torch.stack([b[0] for b in batch])
    texts = torch.stack([b[1] for b in batch])
    n = texts.size(0)
    if n >= 64:
        texts[n - 4:] = texts[n - 4:].roll(1, dims=0)  # ruleid: MLS309
    return images, texts
