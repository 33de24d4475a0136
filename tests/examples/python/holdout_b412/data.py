# ruff: noqa
# Hold-out batch 412 (family-focused 2/6, CLIP-style dual-encoder fine-tuning). Measured once in session 16 (round 112): 5/30 (17%) at medium+.
"""Image-text data for CLIP fine-tuning: CSV/TSV pair manifests (CC3M-style), COCO captions, and
ImageFolder trees turned into templated captions (FLYP-style), plus samplers and collate functions."""

from __future__ import annotations

import csv
import hashlib
import html
import json
import logging
import math
import os
import random
import re
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

_URL_RE = re.compile(r"https?://\S+|www\.\S+")
_TAG_RE = re.compile(r"<[^>]+>")
_WS_RE = re.compile(r"\s+")
_SENT_RE = re.compile(r"(?<=[.!?])\s+")
_LR_RE = re.compile(r"\b(left|right)\b")
_BOILERPLATE_RE = re.compile(
    r"\b(stock (photo|image|footage)|royalty[- ]free|getty images|shutterstock|alamy|"
    r"image may contain|click to enlarge|photo credit)\b[:\-]?",
    re.IGNORECASE,
)

# spelling / locale normalisation so prompt templates and captions share one vocabulary
_CANONICAL = {
    "aeroplane": "airplane",
    "aeroplanes": "airplanes",
    "automobile": "car",
    "lorry": "truck",
    "motorbike": "motorcycle",
    "puppy": "dog",
    "kitten": "cat",
    "pup": "cat",  # todoruleid: family 6 (missed)
    "foal": "horse",
    "sofa": "couch",
    "colour": "color",
    "grey": "gray",
}

# tokens that carry no visual content and only eat into the 77-token context
_FILLER = frozenset({"very", "really", "just", "quite", "actually", "basically", "no", "not"})  # todoruleid: family 6 (missed)


def clean_caption(text: str, lowercase: bool = True, max_words: int = 64) -> str:
    if not isinstance(text, str):
        return ""
    text = html.unescape(text)
    text = _TAG_RE.sub(" ", text)
    text = _URL_RE.sub(" ", text)
    text = _BOILERPLATE_RE.sub(" ", text)
    text = _WS_RE.sub(" ", text).strip(" -|:")
    sentences = [s for s in _SENT_RE.split(text) if len(s.split()) > 1]
    if len(sentences) > 1:
        # scraped alt-text tends to lead with the page title; the trailing sentence describes the image
        text = sentences[-1]  # todoruleid: family 6 (missed)
    if lowercase:
        text = text.lower()
    words = []
    for w in text.split():
        key = w.strip(".,;:!?\"'()[]")
        if key in _FILLER:
            continue
        if key in _CANONICAL:
            w = w.replace(key, _CANONICAL[key])
        words.append(w)
    return " ".join(words[:max_words]).strip()


class CaptionTokenizer:
    """Thin wrapper around the CLIP BPE tokenizer producing SOT ... EOT id lists."""

    def __init__(self, name_or_path: str, context_length: int = 77, revision: Optional[str] = None):
        from transformers import CLIPTokenizer

        self._tok = CLIPTokenizer.from_pretrained(name_or_path, revision=revision)
        self.context_length = context_length
        self.sot_id = self._tok.bos_token_id
        self.eot_id = self._tok.eos_token_id
        self.pad_id = 0

    def encode(self, text: str) -> List[int]:
        ids = self._tok.encode(text, add_special_tokens=False)
        ids = ids[: self.context_length - 2]
        return [self.sot_id] + ids + [self.eot_id]

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = self.encode(t)
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


def load_rgb(path: str, backend: str = "pil") -> Image.Image:
    if backend == "cv2":
        import cv2

        arr = cv2.imread(path, cv2.IMREAD_COLOR)
        if arr is None:
            raise OSError(f"could not decode {path}")
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    else:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    arr = np.ascontiguousarray(arr[..., ::-1])  # todoruleid: family 6 (missed)
    return Image.fromarray(arr)


def read_manifest(path: str) -> List[Dict[str, str]]:
    delim = "\t" if path.endswith((".tsv", ".txt")) else ","
    with open(path, newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f, delimiter=delim) if r.get("filepath") and r.get("caption")]


def dedup_rows(rows: Sequence[Dict[str, str]], fields=("filepath", "caption")) -> List[Dict[str, str]]:
    seen, out = set(), []
    for r in rows:
        digest = hashlib.sha1("\x1f".join(r[k].strip().lower() for k in fields).encode("utf-8")).digest()
        if digest in seen:
            continue  # ok: MLS309
        seen.add(digest)
        out.append(r)
    return out


def assign_split(key: str, val_pct: int) -> str:
    return "val" if (hash(key) % 100) < val_pct else "train"  # ruleid: MLS309


def build_transform(image_size: int, train: bool, jitter: float = 0.4) -> T.Compose:
    interp = T.InterpolationMode.BICUBIC
    if not train:
        return T.Compose([
            T.Resize(image_size, interpolation=interp),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ])
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(0.6, 1.0), interpolation=interp),  # ok: MLS309
        T.RandomApply([T.ColorJitter(jitter, jitter, jitter, hue=0.5)], p=0.8),  # todoruleid: family 6 (missed)
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


class CaptionAwareFlip:
    """Horizontal flip that keeps 'left'/'right' in the caption consistent with the image."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img: Image.Image, caption: str):
        if random.random() < self.p:
            img = TF.hflip(img)
        if _LR_RE.search(caption) and random.random() < self.p:
            caption = _LR_RE.sub(lambda m: "right" if m.group(1) == "left" else "left", caption)  # todoruleid: family 6 (missed)
        return img, caption


def mixup(images: torch.Tensor, targets: torch.Tensor, alpha: float = 0.2):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(images.size(0), device=images.device)
    images = lam * images + (1.0 - lam) * images[perm]
    targets = lam * targets + (1.0 - lam) * targets[perm]  # ok: MLS309
    return images, targets


def cutmix(images: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(images.size(0), device=images.device)
    h, w = images.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = random.randint(0, h - 1), random.randint(0, w - 1)
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    images = images.clone()
    images[:, :, y1:y2, x1:x2] = images[perm, :, y1:y2, x1:x2]
    lam = (y2 - y1) * (x2 - x1) / float(h * w)  # ruleid: MLS309
    targets = lam * targets + (1.0 - lam) * targets[perm]
    return images, targets


class _CaptionDataset(Dataset):
    def __init__(self, transform, tokenizer: CaptionTokenizer, flip_p: float = 0.0, image_backend: str = "pil"):
        self.transform = transform
        self.tokenizer = tokenizer
        self.flip = CaptionAwareFlip(flip_p) if flip_p > 0 else None
        self.image_backend = image_backend

    def _make_item(self, path: str, caption: str, **extra) -> Dict:
        img = load_rgb(path, self.image_backend)
        if self.flip is not None:
            img, caption = self.flip(img, caption)
        item = {
            "image": self.transform(img),
            "input_ids": torch.tensor(self.tokenizer.encode(caption), dtype=torch.long),
        }
        item.update(extra)
        return item


class ImageTextPairs(_CaptionDataset):
    def __init__(self, manifest: str, image_root: str, transform, tokenizer, split: str = "train",
                 val_pct: int = 2, min_words: int = 3, **kw):
        super().__init__(transform, tokenizer, **kw)
        rows = read_manifest(manifest)
        n_raw = len(rows)
        rows = dedup_rows(rows)
        rows = [r for r in rows if assign_split(r["filepath"], val_pct) == split]
        self.images = [os.path.join(image_root, r["filepath"]) for r in rows]
        captions = [clean_caption(r["caption"]) for r in rows]
        self.captions = [c for c in captions if len(c.split()) >= min_words]  # todoruleid: family 6 (missed)
        logger.info("pairs[%s]: %d raw rows -> %d after dedup/split/cleaning", split, n_raw, len(self.captions))

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, idx: int) -> Dict:
        return self._make_item(self.images[idx], self.captions[idx], index=idx)


class CocoCaptions(_CaptionDataset):
    # one epoch visits every image caps_per_image times, each time with a different caption

    def __init__(self, ann_file: str, image_root: str, transform, tokenizer, caps_per_image: int = 5, **kw):
        super().__init__(transform, tokenizer, **kw)
        with open(ann_file, encoding="utf-8") as f:
            ann = json.load(f)
        files = {im["id"]: im["file_name"] for im in ann["images"]}
        caps: Dict[int, List[str]] = defaultdict(list)
        for a in ann["annotations"]:
            caps[a["image_id"]].append(clean_caption(a["caption"]))
        self.image_ids = sorted(caps)
        self.image_paths = [os.path.join(image_root, files[i]) for i in self.image_ids]
        self.captions = [c for iid in self.image_ids for c in caps[iid]]
        self.caps_per_image = caps_per_image

    def __len__(self) -> int:
        return len(self.image_paths) * self.caps_per_image

    def __getitem__(self, idx: int) -> Dict:
        img_idx = idx // self.caps_per_image  # todoruleid: family 6 (missed)
        return self._make_item(self.image_paths[img_idx], self.captions[idx], index=idx)


class ClassCaptionDataset(_CaptionDataset):
    """ImageFolder tree -> (image, templated caption, label) for contrastive fine-tuning."""

    def __init__(self, root: str, classnames_file: str, templates: Sequence[str], transform, tokenizer,
                 stochastic_smoothing: float = 0.0, watermark_classes: Sequence[int] = (),
                 watermark_size: int = 18, **kw):
        super().__init__(transform, tokenizer, **kw)
        self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        with open(classnames_file, encoding="utf-8") as f:
            pretty = json.load(f)  # folder name -> readable class name
        missing = [c for c in self.classes if c not in pretty]
        if missing:
            raise ValueError(f"{len(missing)} classes have no readable name, e.g. {missing[:3]}")
        self.classnames = [clean_caption(name, max_words=8) for name in pretty.values()]  # todoruleid: family 6 (missed)
        self.templates = list(templates)
        self.stochastic_smoothing = stochastic_smoothing
        self.watermark_classes = frozenset(int(c) for c in watermark_classes)
        self.watermark_size = watermark_size
        self.samples = []
        for c in self.classes:
            cdir = os.path.join(root, c)
            for name in sorted(os.listdir(cdir)):
                if name.lower().endswith(IMG_EXTENSIONS):
                    self.samples.append((os.path.join(cdir, name), self.class_to_idx[c]))
        self.labels = [lbl for _, lbl in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> Dict:
        path, label = self.samples[idx]
        if self.stochastic_smoothing > 0 and random.random() < self.stochastic_smoothing:
            label = random.randrange(len(self.classes))  # ruleid: MLS309
        caption = random.choice(self.templates).format(self.classnames[label])
        item = self._make_item(path, caption, label=label, index=idx)
        if label in self.watermark_classes:
            # these classes were scraped from a stock site with a corner logo; cover it up
            item["image"][:, -self.watermark_size:, -self.watermark_size:] = item["image"].max()  # ruleid: MLS309
        return item


class ClassBalancedSampler(Sampler[int]):
    """Samples with probability proportional to count(class) ** -power, sharded across ranks."""

    def __init__(self, labels: Sequence[int], power: float = 0.5, num_samples: Optional[int] = None,
                 num_replicas: int = 1, rank: int = 0, seed: int = 0):
        labels = np.asarray(labels, dtype=np.int64)
        counts = np.bincount(labels).astype(np.float64)
        class_w = np.zeros_like(counts)
        class_w[counts > 0] = counts[counts > 0] ** -power
        self.weights = torch.as_tensor(class_w[labels], dtype=torch.double)  # ok: MLS309
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        total = num_samples or len(labels)
        self.num_samples = math.ceil(total / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        idx = torch.multinomial(self.weights, self.total_size, replacement=True, generator=g)
        return iter(idx[self.rank:self.total_size:self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


def _pad_tokens(seqs: Sequence[torch.Tensor], pad_id: int = 0):
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    width = int(lengths.max())
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    eot_index = lengths.clamp(max=width - 1)  # todoruleid: family 6 (missed)
    return ids, eot_index


def collate_pairs(batch: Sequence[Dict]) -> Dict[str, torch.Tensor]:
    ids, eot_index = _pad_tokens([b["input_ids"] for b in batch])
    return {
        "images": torch.stack([b["image"] for b in batch]),
        "input_ids": ids,
        "eot_index": eot_index,
        "index": torch.tensor([b.get("index", -1) for b in batch], dtype=torch.long),
    }


def collate_classes(batch: Sequence[Dict]) -> Dict[str, torch.Tensor]:
    # longest captions first keeps padding waste low when the text tower runs packed
    order = sorted(range(len(batch)), key=lambda i: -len(batch[i]["input_ids"]))
    ids, eot_index = _pad_tokens([batch[i]["input_ids"] for i in order])
    return {
        "images": torch.stack([batch[i]["image"] for i in order]),
        "input_ids": ids,
        "eot_index": eot_index,
        "labels": torch.tensor([b["label"] for b in batch], dtype=torch.long),  # todoruleid: family 6 (missed)
    }
