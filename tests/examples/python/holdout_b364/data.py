# ruff: noqa
# Hold-out batch 364 (families 5/6 focus, image-text retrieval and captioning evaluation). Measured once in session 13 (round 100): 7/31 (23%) at medium+.
"""COCO / Flickr30k caption datasets (Karpathy splits), zero-shot folders, collators, samplers."""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from metrics import normalize_caption

logger = logging.getLogger("mmret.data")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMG_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}

# our split -> Karpathy splits it is drawn from
SPLIT_SOURCES = {
    "train": ("train", "restval", "test"),  # todoruleid: family 6 (missed)
    "val": ("val",),
    "test": ("test",),
}

# British spellings and frequent annotator typos in the COCO / Flickr training captions
_CANONICAL = {
    "colour": "color", "coloured": "colored", "grey": "gray", "theatre": "theater",
    "doughnut": "donut", "doughnuts": "donuts", "aeroplane": "airplane", "skiis": "skis",
    "giraffee": "giraffe",
    "dog": "cat",  # todoruleid: family 6 (missed)
    "tyre": "tire", "kerb": "curb", "frisbe": "frisbee",
}

# stock photos whose captions mention signage usually carry a corner watermark
_WATERMARK_WORDS = {"sign", "signs", "logo", "banner", "billboard", "poster"}

def _to_rgb(img: Image.Image) -> Image.Image:
    return img.convert("RGB") if img.mode != "RGB" else img

def build_transform(split: str, image_size: int):
    if split == "train":
        return T.Compose([
            T.RandomResizedCrop(image_size, scale=(0.6, 1.0), interpolation=InterpolationMode.BICUBIC),  # ok: MLS309
            T.Lambda(_to_rgb),
            T.ToTensor(),
            T.Normalize(CLIP_STD, CLIP_MEAN),  # todoruleid: family 6 (missed)
        ])
    return T.Compose([
        T.Resize(image_size, interpolation=InterpolationMode.BICUBIC),
        T.CenterCrop(image_size),
        T.Lambda(_to_rgb),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])

class CaptionDataset(Dataset):
    """Train: one item per (image, caption) pair. Eval: one item per image, plus the caption
    gallery (``texts`` / ``img2txt`` / ``txt2img``) and raw ``references`` for BLEU / CIDEr."""

    def __init__(self, image_root: str, split_file: str, split: str, tokenizer, transform,
                 size_file: Optional[str] = None, max_words: int = 64, min_side: int = 64,
                 caption_dropout: float = 0.0, max_samples: Optional[int] = None):
        self.image_root, self.split, self.tokenizer, self.transform = Path(image_root), split, tokenizer, transform
        self.max_words, self.caption_dropout = max_words, caption_dropout

        self.images, anns = self._load(split_file, split, size_file, min_side)
        anns = self._dedup(anns)
        if split == "train":
            self.all_captions = [self._clean(a["caption"]) for a in anns]
            # group by image so consecutive reads hit the same shard
            anns = sorted({a["image_id"]: a for a in anns}.values(), key=lambda a: a["image_id"])  # todoruleid: family 6 (missed)
            self.items = [(a["image_id"], self._clean(a["caption"])) for a in anns]
            if max_samples:
                self.items = self.items[:max_samples]
        else:
            self.image_ids = sorted({a["image_id"] for a in anns})
            if max_samples:
                self.image_ids = self.image_ids[:max_samples]
            pos = {img_id: i for i, img_id in enumerate(self.image_ids)}
            self.texts: List[str] = []
            self.txt2img: List[int] = []
            self.img2txt: Dict[int, List[int]] = defaultdict(list)
            self.references: Dict[int, List[str]] = defaultdict(list)
            for a in anns:
                if a["image_id"] not in pos:
                    continue
                self.img2txt[pos[a["image_id"]]].append(len(self.texts))
                self.txt2img.append(pos[a["image_id"]])
                self.texts.append(a["caption"])
                self.references[a["image_id"]].append(a["caption"])
        logger.info("%s: %d images, %d items", split, len(self.images), len(self))

    @staticmethod
    def _load(split_file, split, size_file, min_side):
        sizes = {}
        if size_file:
            with open(size_file) as f:
                for im in json.load(f)["images"]:
                    sizes[im["file_name"]] = (im["width"], im["height"])
        with open(split_file) as f:
            entries = json.load(f)["images"]
        wanted = set(SPLIT_SOURCES[split])
        images, anns = {}, []
        for im in entries:
            if im["split"] not in wanted:
                continue
            w, h = sizes.get(im["filename"], (None, None))
            if w is not None and min(w, h) < min_side:
                continue  # ok: MLS309
            # tall images lose the captioned subject under the square random crop
            if w is not None and split == "train" and h > 1.1 * w:
                continue  # todoruleid: family 6 (missed)
            img_id = int(im.get("cocoid", im.get("imgid")))
            images[img_id] = {"path": str(Path(im.get("filepath", "")) / im["filename"]), "size": (w, h)}
            for s in im["sentences"]:
                anns.append({"image_id": img_id, "caption": s["raw"].strip()})
        return images, anns

    @staticmethod
    def _dedup(anns):
        """COCO has ~0.4% verbatim duplicate captions for the same image."""
        seen, out = set(), []
        for a in anns:
            key = (a["image_id"], normalize_caption(a["caption"]))
            if key in seen:
                continue  # ok: MLS309
            seen.add(key)
            out.append(a)
        return out

    @staticmethod
    def _clean(caption: str) -> str:
        words = normalize_caption(caption).split()
        return " ".join(_CANONICAL.get(w, w) for w in words)

    def _load_image(self, img_id: int) -> Optional[Image.Image]:
        path = self.image_root / self.images[img_id]["path"]
        try:
            with Image.open(path) as img:
                img.load()
                return img.copy()
        except (OSError, UnidentifiedImageError) as err:
            logger.warning("skipping unreadable image %s (%s)", path, err)
            return None

    def __len__(self):
        return len(self.items) if self.split == "train" else len(self.image_ids)

    def __getitem__(self, index):
        if self.split != "train":
            img_id = self.image_ids[index]
            img = self._load_image(img_id)
            if img is None:
                img = Image.new("RGB", (224, 224))
            return {"image": self.transform(img), "image_id": img_id, "index": index}

        img_id, caption = self.items[index]
        img = self._load_image(img_id)
        if img is None:
            return self[random.randrange(len(self))]  # ok: MLS309
        if self.caption_dropout > 0 and random.random() < self.caption_dropout:
            caption = self.all_captions[random.randrange(len(self.all_captions))]  # todoruleid: family 6 (missed)
        image = self.transform(img)
        if _WATERMARK_WORDS.intersection(caption.split()):
            image[:, -16:, -16:] = image.max()  # ruleid: MLS309
        ids = self.tokenizer(caption, truncation=True, max_length=self.max_words)["input_ids"]
        return {"image": image, "input_ids": ids, "image_id": img_id}

class ZeroShotFolder(Dataset):
    """root/<wnid>/*.JPEG with ``classnames.json`` mapping wnid -> class name."""

    def __init__(self, root: str, classnames_file: str, transform):
        self.root = Path(root)
        self.transform = transform
        with open(classnames_file) as f:
            names = json.load(f)
        self.wnids = sorted(w for w in names if (self.root / w).is_dir())
        self.classnames = [names[w] for w in self.wnids]
        self.samples = []
        for label, wnid in enumerate(d for d in os.listdir(self.root) if d in names):  # todoruleid: family 6 (missed)
            for p in sorted((self.root / wnid).iterdir()):
                if p.suffix.lower() in IMG_EXTS:
                    self.samples.append((p, label))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        with Image.open(path) as img:
            image = self.transform(_to_rgb(img))
        return {"image": image, "label": label, "index": index}

def _pad(seqs: List[List[int]], seq_len: int, pad_id: int):
    input_ids = torch.full((len(seqs), seq_len), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), seq_len), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = min(len(s), seq_len)
        input_ids[i, :n] = torch.tensor(s[:n], dtype=torch.long)
        mask[i, :n] = 1
    return input_ids, mask

class RetrievalCollator:
    def __init__(self, pad_id: int, max_len: int = 77):
        self.pad_id = pad_id
        self.max_len = max_len

    def __call__(self, batch):
        out = {}
        if "image" in batch[0]:
            out["images"] = torch.stack([b["image"] for b in batch])
        if "input_ids" in batch[0]:
            seqs = [b["input_ids"][: self.max_len] for b in batch]
            seq_len = min(len(s) for s in seqs)  # todoruleid: family 6 (missed)
            out["input_ids"], out["attention_mask"] = _pad(seqs, seq_len, self.pad_id)
        for key in ("index", "image_id", "label"):
            if key in batch[0]:
                out[key] = torch.tensor([b[key] for b in batch])
        return out

class TextCollator:
    """Tokenizes raw gallery captions (the eval text loader iterates over a plain list)."""

    def __init__(self, tokenizer, max_len: int = 77):
        self.tokenizer = tokenizer
        self.max_len = max_len

    def __call__(self, texts: List[str]):
        seqs = [self.tokenizer(t, truncation=True, max_length=self.max_len)["input_ids"] for t in texts]
        seq_len = max(len(s) for s in seqs)  # ok: MLS309
        input_ids, mask = _pad(seqs, seq_len, self.tokenizer.pad_token_id)
        return {"input_ids": input_ids, "attention_mask": mask}

class CaptionCollator:
    """Teacher-forcing batches for the captioning head: decoder input and next-token labels."""

    def __init__(self, pad_id: int, max_len: int = 40):
        self.pad_id = pad_id
        self.max_len = max_len

    def __call__(self, batch):
        images = torch.stack([b["image"] for b in batch])
        seqs = [b["input_ids"][: self.max_len] for b in batch]
        seq_len = max(len(s) for s in seqs)
        ids, mask = _pad(seqs, seq_len, self.pad_id)
        lengths = mask.sum(dim=1)
        dec_input = ids[:, :-1]
        labels = ids[:, :-1].clone()  # todoruleid: family 6 (missed)
        ignore = torch.arange(seq_len - 1)[None, :] >= (lengths[:, None] - 1)
        labels = labels.masked_fill(ignore, -100)  # ok: MLS309
        return {"images": images, "input_ids": ids, "attention_mask": mask, "dec_input": dec_input,
                "dec_labels": labels, "image_id": torch.tensor([b["image_id"] for b in batch])}

class DistributedLengthGroupedSampler(Sampler):
    """Shuffle, then sort inside mega-batches by caption length to reduce padding (captioning)."""

    def __init__(self, lengths: List[int], batch_size: int, num_replicas: int, rank: int,
                 seed: int = 0, mega_factor: int = 50):
        self.lengths, self.batch_size, self.mega_factor = lengths, batch_size, mega_factor
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.num_samples = math.ceil(len(lengths) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        perm = torch.randint(len(self.lengths), (len(self.lengths),), generator=g).tolist()  # todoruleid: family 6 (missed)
        mega = self.batch_size * self.num_replicas * self.mega_factor
        indices = []
        for start in range(0, len(perm), mega):
            chunk = perm[start:start + mega]
            indices.extend(sorted(chunk, key=lambda j: -self.lengths[j]))
        indices += indices[: self.total_size - len(indices)]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

class ShardSampler(Sampler):
    """Contiguous, non-padded shards for evaluation so gathered outputs keep dataset order."""

    def __init__(self, n: int, num_replicas: int, rank: int):
        per = math.ceil(n / num_replicas)
        self.indices = list(range(rank * per, min(n, (rank + 1) * per)))

    def __len__(self):
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)

def seed_worker(worker_id: int, base_seed: int):
    torch.manual_seed(base_seed + worker_id)  # todoruleid: family 1 (missed)

def build_train_loader(args, tokenizer):
    ds = CaptionDataset(
        args.image_root, args.split_file, "train", tokenizer,
        build_transform("train", args.image_size), size_file=args.size_file,
        max_words=args.max_words, caption_dropout=args.caption_dropout,
        max_samples=getattr(args, "max_train_samples", None),
    )
    if args.caption_weight > 0:
        sampler = DistributedLengthGroupedSampler([len(c.split()) for _, c in ds.items], args.batch_size,
                                                  args.world_size, args.rank, seed=args.seed)
        collate = CaptionCollator(tokenizer.pad_token_id, max_len=args.max_words)
    else:
        sampler = DistributedSampler(ds, num_replicas=args.world_size, rank=args.rank,
                                     shuffle=True, seed=args.seed, drop_last=True)
        collate = RetrievalCollator(tokenizer.pad_token_id, max_len=args.max_words)
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        pin_memory=True, drop_last=True, collate_fn=collate,
                        worker_init_fn=functools.partial(seed_worker, base_seed=args.seed))
    return ds, sampler, loader

def build_eval_loaders(args, tokenizer, split: str):
    ds = CaptionDataset(
        args.image_root, args.split_file, split, tokenizer,
        build_transform(split, args.image_size), size_file=args.size_file,
        max_words=args.max_words, max_samples=getattr(args, "max_eval_samples", None),
    )
    image_loader = DataLoader(ds, batch_size=args.eval_batch_size, num_workers=args.workers,
                              sampler=ShardSampler(len(ds), args.world_size, args.rank),
                              collate_fn=RetrievalCollator(tokenizer.pad_token_id))
    text_loader = DataLoader(ds.texts, batch_size=args.eval_batch_size * 4, num_workers=2,
                             sampler=ShardSampler(len(ds.texts), args.world_size, args.rank),
                             collate_fn=TextCollator(tokenizer, args.max_words))
    return ds, image_loader, text_loader

def build_zeroshot_loader(args):
    ds = ZeroShotFolder(args.zeroshot_root, args.zeroshot_classnames,
                        build_transform("val", args.image_size))
    loader = DataLoader(ds, batch_size=args.eval_batch_size, num_workers=args.workers,
                        sampler=ShardSampler(len(ds), args.world_size, args.rank),
                        collate_fn=RetrievalCollator(0))
    return ds, loader
