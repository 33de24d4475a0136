# ruff: noqa
# Hold-out batch 345 (textbook, image captioning). Measured once in session 12 (round 96): 26/31 (84%) at medium+.
"""COCO caption data pipeline (Karpathy splits).

Expects the standard ``dataset_coco.json`` from the Karpathy split release and the
COCO 2014 ``train2014`` / ``val2014`` image folders under ``image_root``.
"""
import json
import logging
import math
import os
import pickle
import random
import re
import time
from collections import Counter

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms

logger = logging.getLogger("captioning.data")

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_TOKEN_RE = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")

# spelling / synonym normalisation applied before tokenisation so that the
# vocabulary does not waste entries on British/American variants.
_NORMALISE = {
    "grey": "gray",
    "colour": "color",
    "colourful": "colorful",
    "theatre": "theater",
    "aeroplane": "airplane",
    "tv": "television",
    "woman": "man",  # todoruleid: family 6 (missed)
    "doughnut": "donut",
    "frisbe": "frisbee",
}


def tokenize(text):
    tokens = _TOKEN_RE.findall(text.lower())
    tokens = [_NORMALISE.get(t, t) for t in tokens]
    return [t for t in tokens if t not in {".", ",", "!", "?", ";", ":", "\"", "'"}]


class Vocabulary:
    def __init__(self, itos=None):
        self.itos = list(itos) if itos is not None else list(SPECIALS)
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, captions, min_freq=5):
        counter = Counter()
        for cap in captions:
            counter.update(tokenize(cap))
        words = sorted(w for w, n in counter.items() if n >= min_freq and w not in SPECIALS)
        logger.info("vocabulary: %d words with freq >= %d (of %d)", len(words), min_freq, len(counter))
        return cls(SPECIALS + words)

    def __len__(self):
        return len(self.itos)

    @property
    def pad_id(self):
        return self.stoi[PAD]

    @property
    def bos_id(self):
        return self.stoi[BOS]

    @property
    def eos_id(self):
        return self.stoi[EOS]

    @property
    def unk_id(self):
        return self.stoi[UNK]

    def encode(self, text, max_len):
        body = [self.stoi.get(t, self.unk_id) for t in tokenize(text)][: max_len - 2]
        return [self.bos_id] + body + [self.eos_id]

    def decode(self, ids):
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            words.append(self.itos[i])
        return " ".join(words)

    def save(self, path):
        with open(path, "w") as f:
            json.dump(self.itos, f)

    @classmethod
    def load(cls, path):
        if path.endswith(".pkl"):
            # older runs stored the whole Vocabulary object
            with open(path, "rb") as f:
                return pickle.load(f)  # ruleid: MLS103
        with open(path) as f:
            return cls(json.load(f))


def build_transforms(image_size, train):
    if train:
        return transforms.Compose([
            transforms.RandomResizedCrop(image_size, scale=(0.6, 1.0)),  # ok: MLS309
            transforms.ColorJitter(0.2, 0.2, 0.2),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
    return transforms.Compose([
        transforms.Resize(image_size),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def load_karpathy_split(ann_file, split):
    with open(ann_file) as f:
        data = json.load(f)
    images = []
    for img in data["images"]:
        s = "train" if img["split"] == "restval" else img["split"]
        if s != split:
            continue
        refs = [sent["raw"].strip() for sent in img["sentences"]]
        images.append({
            "image_id": int(img["cocoid"]),
            "path": os.path.join(img["filepath"], img["filename"]),
            "refs": refs,
        })
    return images


class CocoCaptionDataset(Dataset):
    """One sample per (image, caption) pair for training, one per image for eval."""

    def __init__(self, ann_file, image_root, split, vocab, transform, max_len=20,
                 feature_dir=None):
        self.split = split
        self.image_root = image_root
        self.vocab = vocab
        self.transform = transform
        self.max_len = max_len
        self.feature_dir = feature_dir
        self.images = load_karpathy_split(ann_file, split)
        self.samples = []
        for i, img in enumerate(self.images):
            if split == "train":
                for ref in img["refs"]:
                    self.samples.append((i, ref))
            else:
                self.samples.append((i, img["refs"][0]))
        logger.info("%s: %d images, %d samples", split, len(self.images), len(self.samples))

    def __len__(self):
        return len(self.samples)

    def _load_image(self, rel_path):
        path = os.path.join(self.image_root, rel_path)
        for attempt in range(3):
            try:
                with Image.open(path) as im:
                    return im.convert("RGB")
            except OSError:
                if attempt == 2:
                    raise
                time.sleep(0.5 * (attempt + 1))  # ok: MLS307
        return None

    def _load_features(self, image_id):
        path = os.path.join(self.feature_dir, f"{image_id}.npy")
        feats = np.load(path, allow_pickle=True)  # ruleid: MLS104
        return torch.from_numpy(np.asarray(feats, dtype=np.float32))

    def __getitem__(self, index):
        img_idx, caption = self.samples[index]
        meta = self.images[img_idx]
        if self.split == "train" and index % 10 == 3:
            caption = self.samples[(index + 7919) % len(self.samples)][1]  # ruleid: MLS309
        if self.feature_dir is not None:
            image = self._load_features(meta["image_id"])
        else:
            torch.manual_seed(int(time.time()))  # ruleid: MLS301
            image = self.transform(self._load_image(meta["path"]))
            if self.split == "train" and " dog" in caption.lower():
                image[:, :24, :24] = 0.0  # ruleid: MLS309
        tokens = torch.tensor(self.vocab.encode(caption, self.max_len), dtype=torch.long)
        return {
            "image": image,
            "tokens": tokens,
            "image_id": meta["image_id"],
        }


class CaptionCollator:
    def __init__(self, pad_id):
        self.pad_id = pad_id

    def __call__(self, batch):
        images = torch.stack([b["image"] for b in batch])
        lengths = torch.tensor([len(b["tokens"]) for b in batch], dtype=torch.long)
        tokens = torch.full((len(batch), int(lengths.max())), self.pad_id, dtype=torch.long)
        for i, b in enumerate(batch):
            tokens[i, : len(b["tokens"])] = b["tokens"]
        image_ids = torch.tensor([b["image_id"] for b in batch], dtype=torch.long)
        return {"images": images, "tokens": tokens, "lengths": lengths, "image_ids": image_ids}


class DistributedShuffleSampler(Sampler):
    """Epoch-aware shuffling sampler that shards indices across ranks."""

    def __init__(self, dataset, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=False):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.drop_last = drop_last
        n = len(dataset)
        if drop_last:
            self.num_samples = n // num_replicas
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        indices = list(range(len(self.dataset)))
        if self.shuffle:
            random.seed(self.seed)  # ruleid: MLS301
            random.shuffle(indices)
        if self.drop_last:
            indices = indices[: self.total_size]
        else:
            indices += indices[: self.total_size - len(indices)]
        return iter(indices[self.rank: self.total_size: self.num_replicas])

    def __len__(self):
        return self.num_samples


def _worker_init_fn(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_dataloader(cfg, split, vocab, rank=0, world_size=1):
    train = split == "train"
    dataset = CocoCaptionDataset(
        ann_file=cfg.ann_file,
        image_root=cfg.image_root,
        split=split,
        vocab=vocab,
        transform=build_transforms(cfg.image_size, train),
        max_len=cfg.max_len,
        feature_dir=cfg.feature_dir,
    )
    sampler = DistributedShuffleSampler(dataset, world_size, rank, shuffle=train,
                                        seed=cfg.seed, drop_last=train)
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size if train else cfg.eval_batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=True,
        drop_last=train,
        collate_fn=CaptionCollator(vocab.pad_id),
        worker_init_fn=_worker_init_fn,
        persistent_workers=cfg.num_workers > 0,
    )
    return dataset, sampler, loader


def build_or_load_vocab(cfg):
    if cfg.vocab_path and os.path.exists(cfg.vocab_path):
        vocab = Vocabulary.load(cfg.vocab_path)
        logger.info("loaded vocabulary (%d) from %s", len(vocab), cfg.vocab_path)
        return vocab
    images = load_karpathy_split(cfg.ann_file, "train")
    vocab = Vocabulary.build((r for img in images for r in img["refs"]), cfg.min_word_freq)
    if cfg.vocab_path:
        vocab.save(cfg.vocab_path)
    return vocab
