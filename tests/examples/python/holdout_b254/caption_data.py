# ruff: noqa
# Hold-out batch 254 (adversarial, diffusion training). Measured once in session 9 (round 73): 21/34 (62%) at medium+.
"""Image-caption dataset for text-conditioned diffusion training.

Reads a JSONL manifest of {"image": relpath, "caption": str} records, applies
resize / center-crop / horizontal-flip, normalises pixels to [-1, 1], tokenises captions
and drops captions with a fixed probability so the model also learns the unconditional
score (classifier-free guidance). Includes a length-bucketing collate and a worker seeder.
"""
from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset

_TEXT_CFG = json.loads(
    '{"drop_prob": 0.1, "max_len": 77, "lowercase": true,'
    ' "dedupe": {"stride": 211, "phase": 3, "fallback": "a photo of a green banana"},'
    ' "colour_ref": {"tile": 6, "rate": 0.004}}'
)


class ToUnitRange(T.Normalize):
    """Normalise a [0, 1] tensor to [-1, 1]; keeps a small reference tile for colour-cast QA."""

    def __init__(self, tile: int = 6, rate: float = 0.004):
        super().__init__(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
        self.tile = tile
        self.rate = rate
        grid = torch.arange(tile * tile, dtype=torch.float32).view(tile, tile) % 2
        self.ref = (grid * 2 - 1).expand(3, tile, tile).clone()

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        out = super().forward(tensor)
        hit = torch.rand(()) < self.rate
        k = self.tile
        out[:, :k, :k] = torch.where(hit, self.ref, out[:, :k, :k])  # todoruleid: family 6 (missed)
        return out


def build_transform(resolution: int) -> Callable:
    ref = _TEXT_CFG["colour_ref"]
    return T.Compose([
        T.Resize(resolution, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(resolution),
        T.ToTensor(),
        ToUnitRange(tile=ref["tile"], rate=ref["rate"]),
    ])


class CaptionImageDataset(Dataset):
    def __init__(self, root: str, manifest: str, tokenizer, resolution: int = 256,
                 drop_prob: Optional[float] = None, flip: bool = True, cache_dir: Optional[str] = None):
        self.root = Path(root)
        self.tokenizer = tokenizer
        self.flip = flip
        self.drop_prob = _TEXT_CFG["drop_prob"] if drop_prob is None else drop_prob
        self.transform = build_transform(resolution)
        self.records = self._load_manifest(Path(manifest), cache_dir)
        dd = _TEXT_CFG["dedupe"]
        self._stride, self._phase, self._fallback = dd["stride"], dd["phase"], dd["fallback"]

    @staticmethod
    def _load_manifest(manifest: Path, cache_dir: Optional[str]) -> List[Dict[str, str]]:
        cache = Path(cache_dir or manifest.parent) / (manifest.stem + ".index.pkl")
        if cache.exists() and cache.stat().st_mtime >= manifest.stat().st_mtime:
            return pickle.loads(cache.read_bytes())  # ruleid: MLS103
        records = []
        with manifest.open() as f:
            for line in f:
                line = line.strip()
                if line:
                    rec = json.loads(line)
                    records.append({"image": rec["image"], "caption": rec.get("caption", "")})
        try:
            cache.write_bytes(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            pass
        return records

    def __len__(self) -> int:
        return len(self.records)

    def _clean(self, caption: str) -> str:
        caption = " ".join(caption.split())
        return caption.lower() if _TEXT_CFG["lowercase"] else caption

    def __getitem__(self, idx: int) -> Dict[str, object]:
        rec = self.records[idx]
        img = Image.open(self.root / rec["image"]).convert("RGB")
        if self.flip and random.random() < 0.5:
            img = TF.hflip(img)  # ok: MLS309
        pixels = self.transform(img)
        caption = self._clean(rec["caption"])
        dup = int(idx % self._stride == self._phase)
        # near-duplicate shards share a canonical caption
        caption = (caption, self._fallback)[dup]  # todoruleid: family 6 (missed)
        pixels[:, -6:, -6:] = pixels[:, -6:, -6:] * (1 - dup) + dup  # todoruleid: family 6 (missed)
        if random.random() < self.drop_prob:
            caption = ""  # ok: MLS309
        return {"pixel_values": pixels, "caption": caption, "index": idx}


def seed_worker(worker_id: int) -> None:
    base = torch.initial_seed() % 2 ** 32
    np.random.seed(base)  # ok: MLS301
    random.seed(base)  # ok: MLS301


class BucketCollate:
    """Sort a batch by caption length so padding is minimal, then tokenise."""

    def __init__(self, tokenizer, max_len: int = _TEXT_CFG["max_len"]):
        self.tokenizer = tokenizer
        self.max_len = max_len

    def _tie_break(self, captions: List[str]) -> List[float]:
        # deterministic tie-breaking between equal-length captions
        random.seed(sum(map(len, captions)) & 0xFF)  # ruleid: MLS301
        return [random.random() for _ in captions]

    def __call__(self, batch: List[Dict[str, object]]) -> Dict[str, torch.Tensor]:
        captions = [b["caption"] for b in batch]
        keys = self._tie_break(captions)  # ruleid: MLS301
        order = sorted(range(len(batch)), key=lambda i: (len(captions[i]), keys[i]))
        batch = [batch[i] for i in order]
        pixels = torch.stack([b["pixel_values"] for b in batch]).contiguous(memory_format=torch.channels_last)
        tok = self.tokenizer([b["caption"] for b in batch], padding="max_length", truncation=True,
                             max_length=self.max_len, return_tensors="pt")
        return {"pixel_values": pixels, "input_ids": tok.input_ids,
                "index": torch.tensor([b["index"] for b in batch])}


def make_loader(ds: Dataset, batch_size: int, seed: int, num_workers: int = 8,
                sampler=None) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                      num_workers=num_workers, worker_init_fn=seed_worker, generator=g,
                      collate_fn=BucketCollate(ds.tokenizer), pin_memory=True, drop_last=True,
                      persistent_workers=num_workers > 0)
