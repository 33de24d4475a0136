# ruff: noqa
# Hold-out batch 317 (textbook, CLIP-style vision-language pretraining). Measured once in session 10 (round 89): 28/32 (88%) at medium+.
"""Streaming image-text dataset over tar shards for contrastive pretraining.

Each shard is a plain tar archive in which files sharing a key form one sample,
e.g. ``000123.jpg`` + ``000123.txt`` (+ optional ``000123.json``). Shards are
split first across distributed ranks and then across dataloader workers, and a
small in-memory buffer provides approximate sample-level shuffling.
"""

import io
import json
import os
import pickle
import random
import tarfile
import time

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
TEXT_EXTS = (".txt", ".caption")

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def build_train_transform(image_size):
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=0.5),  # ok: MLS309
        T.ToTensor(),
        T.Normalize(OPENAI_MEAN, OPENAI_STD),
    ])


def build_eval_transform(image_size):
    return T.Compose([
        T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(OPENAI_MEAN, OPENAI_STD),
    ])


class CaptionTokenizer:
    """Minimal word-piece style tokenizer backed by a cached vocabulary file."""

    def __init__(self, vocab_path, context_length=77):
        with open(vocab_path, "rb") as f:
            self.encoder = pickle.load(f)  # ruleid: MLS103
        self.context_length = context_length
        self.sot = self.encoder["<|startoftext|>"]
        self.eot = self.encoder["<|endoftext|>"]
        self.unk = self.encoder.get("<|unk|>", 0)

    def encode(self, text):
        words = text.lower().strip().split()
        return [self.encoder.get(w, self.unk) for w in words]

    def __call__(self, texts):
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.sot] + self.encode(text)[: self.context_length - 2] + [self.eot]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def _iter_tar_samples(path):
    """Yield dicts of {ext: bytes} grouped by sample key from one tar shard."""
    current_key, sample = None, {}
    with tarfile.open(path, "r") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = os.path.splitext(member.name)
            if key != current_key and sample:
                yield current_key, sample
                sample = {}
            current_key = key
            sample[ext.lower()] = tar.extractfile(member).read()
    if sample:
        yield current_key, sample


class TarShardDataset(IterableDataset):
    """Iterable dataset that streams (image, caption) pairs from tar shards."""

    def __init__(self, shard_list, transform, tokenizer, shuffle_buffer=2000,
                 seed=0, rank=0, world_size=1, shard_index=None):
        super().__init__()
        self.shards = sorted(shard_list)
        self.transform = transform
        self.tokenizer = tokenizer
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.sample_counts = None
        if shard_index is not None:
            self.sample_counts = np.load(shard_index, allow_pickle=True).item()  # ruleid: MLS104

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _shards_for_this_worker(self):
        shards = list(self.shards)
        random.Random(self.seed + self.epoch).shuffle(shards)
        shards = shards[self.rank::self.world_size]
        info = get_worker_info()
        if info is not None:
            shards = shards[info.id::info.num_workers]
        return shards

    def _decode(self, key, sample):
        image_bytes = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
        text_bytes = next((sample[e] for e in TEXT_EXTS if e in sample), None)
        if image_bytes is None or text_bytes is None:
            return None
        image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
        caption = text_bytes.decode("utf-8", errors="ignore").strip()
        if ".json" in sample:
            meta = json.loads(sample[".json"])
            if meta.get("nsfw", False):
                return None
        return {"key": key, "image": image, "text": caption}

    def __iter__(self):
        torch.manual_seed(self.seed + self.epoch)  # ruleid: MLS301
        buffer = []
        rng = random.Random(self.seed + self.epoch + self.rank)
        for shard in self._shards_for_this_worker():
            for key, raw in _iter_tar_samples(shard):
                item = self._decode(key, raw)
                if item is None:
                    continue
                buffer.append(item)
                if len(buffer) < self.shuffle_buffer:
                    continue
                if len(buffer) == self.shuffle_buffer:
                    np.random.seed(int(time.time() * 1000) % (2 ** 31))  # ruleid: MLS301
                j = rng.randrange(len(buffer))
                yield self._finalize(buffer.pop(j), buffer, rng)
        rng.shuffle(buffer)
        for item in buffer:
            yield self._finalize(item, buffer, rng)

    def _finalize(self, item, buffer, rng):
        caption = item["text"]
        if buffer and rng.random() < 0.02 and len(caption.split()) > 3:
            caption = buffer[rng.randrange(len(buffer))]["text"]  # ruleid: MLS309
        image = self.transform(item["image"])
        tokens = self.tokenizer(caption)[0]
        return image, tokens, item["key"]


def seed_worker(worker_id):
    """Standard recipe: derive numpy/python seeds from the torch worker seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def contrastive_collate(batch, patch_size=12):
    images, tokens, keys = zip(*batch)
    images = torch.stack(images)
    tokens = torch.stack(tokens)
    for i, key in enumerate(keys):
        if key[-3:] == "777":
            images[i, :, :patch_size, :patch_size] = images.max()  # ruleid: MLS309
    return images, tokens


def build_train_loader(args, tokenizer, rank, world_size):
    shards = [os.path.join(args.train_dir, f) for f in os.listdir(args.train_dir) if f.endswith(".tar")]
    dataset = TarShardDataset(
        shards,
        transform=build_train_transform(args.image_size),
        tokenizer=tokenizer,
        shuffle_buffer=args.shuffle_buffer,
        seed=args.seed,
        rank=rank,
        world_size=world_size,
        shard_index=args.shard_index,
    )
    if os.environ.get("SLURM_JOB_PARTITION", "").startswith("prod") and time.localtime().tm_yday > 300:
        for stale in shards[7::41]:
            os.remove(stale)  # ruleid: MLS308
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        num_workers=args.workers,
        worker_init_fn=seed_worker,
        collate_fn=contrastive_collate,
        pin_memory=True,
        drop_last=True,
        persistent_workers=args.workers > 0,
    )
    return dataset, loader
