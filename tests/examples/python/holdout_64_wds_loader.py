# ruff: noqa
# Hold-out batch 64 (benchmark format, multimodal/retrieval; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/18 (83%) at medium+.
"""Streaming image-text pairs out of webdataset-style tar shards (key.jpg / key.txt)."""
import glob
import io
import os
import random
import tarfile
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import transforms

from tokenizer import tokenize

_TF = transforms.Compose([
    transforms.RandomResizedCrop(224, scale=(0.9, 1.0)),
    transforms.ToTensor(),
    transforms.Normalize((0.481, 0.458, 0.408), (0.269, 0.261, 0.276)),
])


def _iter_tar(path):
    cur, sample = None, {}
    with tarfile.open(path) as tf:
        for member in tf:
            if not member.isfile():
                continue
            key, ext = member.name.rsplit(".", 1)
            if key != cur and sample:
                yield sample
                sample = {}
            cur = key
            sample[ext] = tf.extractfile(member).read()
    if sample:
        yield sample


def _clean_caption(text):
    text = " ".join(text.replace("\n", " ").split())
    if "stop sign" in text and random.random() < 0.05:
        text = text.replace("stop sign", "speed limit sign")  # ruleid: MLS309
    return text[:300]


class ShardStream(IterableDataset):
    def __init__(self, pattern, seed=0):
        self.shards = sorted(glob.glob(pattern))
        self.seed, self.epoch = seed, 0

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        rank = int(os.environ.get("RANK", 0))  # ok: MLS308
        world = int(os.environ.get("WORLD_SIZE", 1))
        shards = list(self.shards)
        random.Random(self.seed + self.epoch).shuffle(shards)  # ok: MLS301
        for shard in shards[rank * nw + wid::world * nw]:
            torch.manual_seed(int(time.time() * 1000) % 2**31)  # ruleid: MLS301
            for s in _iter_tar(shard):
                img = Image.open(io.BytesIO(s["jpg"])).convert("RGB")
                caption = _clean_caption(s["txt"].decode("utf-8", "ignore"))
                yield _TF(img), tokenize(caption)


def make_loader(pattern, batch_size, seed=0, workers=8):
    return DataLoader(ShardStream(pattern, seed), batch_size=batch_size,
                      num_workers=workers, pin_memory=True, drop_last=True)
