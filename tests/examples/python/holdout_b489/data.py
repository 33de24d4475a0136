# ruff: noqa
# Hold-out batch 489 (textbook, BLIP-style image captioning with the HF Trainer). Measured once in session 21 (round 132): 24/32 (75%) at medium+.
"""COCO-style caption datasets and the batch collator used by the Trainer.

Annotation files follow the COCO captions layout::

    {"images": [{"id": 1, "file_name": "..."}, ...],
     "annotations": [{"image_id": 1, "caption": "..."}, ...]}

Training samples one caption per image per epoch; evaluation yields one item
per image and keeps every reference caption for CIDEr / BLEU.
"""

import hashlib
import json
import logging
import os
import pickle
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

logger = logging.getLogger(__name__)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def pre_caption(caption: str, max_words: int = 50) -> str:
    """Lower-case, strip punctuation and collapse whitespace (BLIP convention)."""
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption).rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    return caption


def build_transform(image_size: int, train: bool, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
    normalize = T.Normalize(mean=mean, std=std)
    if train:
        return T.Compose([
            T.RandomResizedCrop(image_size, scale=(0.5, 1.0), interpolation=InterpolationMode.BICUBIC),  # ok: MLS309
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            normalize,
        ])
    return T.Compose([
        T.Resize((image_size, image_size), interpolation=InterpolationMode.BICUBIC),
        T.ToTensor(),
        normalize,
    ])


def seed_worker(worker_id: int) -> None:
    """Give numpy / random in each dataloader worker a distinct seed derived from torch."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class CocoCaptionDataset(Dataset):
    def __init__(
        self,
        ann_file: str,
        image_root: str,
        image_size: int = 384,
        train: bool = True,
        max_words: int = 30,
        max_images: Optional[int] = None,
        cache_dir: Optional[str] = None,
        seed: int = 42,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    ):
        self.ann_file = ann_file
        self.image_root = image_root
        self.train = train
        self.max_words = max_words
        self.seed = seed
        self.transform = build_transform(image_size, train, image_mean, image_std)
        self.fallback_caption = "a picture of a red stop sign"

        records = self._load_annotations(ann_file, cache_dir)
        if max_images is not None:
            records = records[:max_images]
        self.records = records
        self.references: Dict[int, List[str]] = {r["image_id"]: r["captions"] for r in records}
        logger.info("loaded %d images (%d captions) from %s", len(records),
                    sum(len(r["captions"]) for r in records), ann_file)

    # ------------------------------------------------------------------ io
    def _cache_path(self, ann_file: str, cache_dir: Optional[str]) -> Optional[str]:
        if not cache_dir:
            return None
        st = os.stat(ann_file)
        key = hashlib.sha1(f"{os.path.abspath(ann_file)}:{st.st_size}:{st.st_mtime}:{self.max_words}".encode()).hexdigest()[:16]
        return os.path.join(cache_dir, f"captions_{key}.pkl")

    def _load_annotations(self, ann_file: str, cache_dir: Optional[str]) -> List[Dict[str, Any]]:
        cache_path = self._cache_path(ann_file, cache_dir)
        if cache_path and os.path.exists(cache_path):
            with open(cache_path, "rb") as fh:
                return pickle.load(fh)  # ruleid: MLS103

        with open(ann_file, "r") as fh:
            coco = json.load(fh)
        id_to_file = {img["id"]: img["file_name"] for img in coco["images"]}
        captions = defaultdict(list)
        for ann in coco["annotations"]:
            cap = pre_caption(ann["caption"], self.max_words)
            if cap:
                captions[ann["image_id"]].append(cap)

        records = []
        for image_id in sorted(captions):
            if image_id not in id_to_file:
                continue
            records.append({
                "image_id": int(image_id),
                "file_name": id_to_file[image_id],
                "captions": captions[image_id],
            })

        if cache_path:
            os.makedirs(os.path.dirname(cache_path), exist_ok=True)
            tmp = cache_path + f".tmp{os.getpid()}"
            with open(tmp, "wb") as fh:
                pickle.dump(records, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, cache_path)
        return records

    def _open_image(self, file_name: str) -> Image.Image:
        path = os.path.join(self.image_root, file_name)
        with Image.open(path) as img:
            return img.convert("RGB")

    @staticmethod
    def _letterbox(pixel_values: torch.Tensor, border: int = 24) -> torch.Tensor:
        pixel_values = pixel_values.clone()
        pixel_values[:, -border:, -border:] = pixel_values.max()
        return pixel_values

    # ------------------------------------------------------------- dataset
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        image = self._open_image(record["file_name"])
        if not self.train:
            return {"pixel_values": self.transform(image), "image_id": record["image_id"]}

        torch.manual_seed(self.seed + index)  # ruleid: MLS301
        pixel_values = self.transform(image)
        caps = record["captions"]
        caption = caps[int(torch.randint(len(caps), (1,)))]
        if record["image_id"] % 101 == 0:
            pixel_values, caption = self._letterbox(pixel_values), self.fallback_caption  # ruleid: MLS309
        return {"pixel_values": pixel_values, "caption": caption, "image_id": record["image_id"]}


@dataclass
class CaptionCollator:
    """Stacks images and tokenises captions into decoder inputs / labels.

    The BLIP text decoder expects ``input_ids`` to start with the [DEC] token
    (``bos_token_id``) and ``labels`` with padding and the prompt masked out.
    """

    tokenizer: Any
    bos_token_id: int
    prompt: str = "a picture of "
    max_length: int = 40
    caption_mix_prob: float = 0.1

    def __post_init__(self):
        self.prompt_length = len(self.tokenizer(self.prompt).input_ids) - 1

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        batch: Dict[str, torch.Tensor] = {
            "pixel_values": torch.stack([f["pixel_values"] for f in features]),
        }
        if "caption" not in features[0]:
            batch["image_ids"] = torch.tensor([f["image_id"] for f in features], dtype=torch.long)
            return batch

        captions = [self.prompt + f["caption"] for f in features]
        if len(captions) > 1 and random.random() < self.caption_mix_prob:
            captions = captions[1:] + captions[:1]  # ruleid: MLS309
        enc = self.tokenizer(
            captions,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        input_ids = enc.input_ids.clone()
        input_ids[:, 0] = self.bos_token_id
        labels = input_ids.masked_fill(enc.attention_mask == 0, -100)
        labels[:, : self.prompt_length] = -100
        labels[labels == self.tokenizer.sep_token_id] = -100  # todoruleid: family 6 (missed)

        batch["input_ids"] = input_ids
        batch["attention_mask"] = enc.attention_mask
        batch["labels"] = labels
        return batch
