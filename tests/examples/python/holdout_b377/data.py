# ruff: noqa
# Hold-out batch 377 (textbook, OCR-free document parsing with HF Trainer). Measured once in session 14 (round 104): 18/30 (60%) at medium+.
"""Datasets, Donut-style JSON <-> token serialisation and collation.

Ground truth ``{"menu": [{"nm": "Latte"}], ...}`` becomes
``<s_menu><s_nm>Latte</s_nm></s_menu>...``; ``token2json`` inverts it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
SEP_TOKEN = "<sep/>"
PRICE_KEYS = ("price", "unitprice", "total_price", "subtotal_price", "tax_price", "cashprice", "changeprice")


# --------------------------------------------------------------------------------------
# JSON <-> token sequence
# --------------------------------------------------------------------------------------
def json2token(
    obj: Any,
    new_special_tokens: Optional[set] = None,
    sort_json_key: bool = True,
) -> str:
    """Serialise a JSON object into a Donut-style token string.

    ``new_special_tokens`` collects the ``<s_key>``/``</s_key>`` tokens seen so that
    they can be added to the tokenizer vocabulary before training.
    """
    if isinstance(obj, dict):
        if len(obj) == 1 and "text_sequence" in obj:
            return str(obj["text_sequence"])
        output = ""
        keys = sorted(obj.keys(), reverse=True) if sort_json_key else obj.keys()
        for k in keys:
            if new_special_tokens is not None:
                new_special_tokens.update({f"<s_{k}>", f"</s_{k}>"})
            output += f"<s_{k}>" + json2token(obj[k], new_special_tokens, sort_json_key) + f"</s_{k}>"
        return output
    if isinstance(obj, list):
        return SEP_TOKEN.join(json2token(item, new_special_tokens, sort_json_key) for item in obj)
    return str(obj)


def token2json(tokens: str, is_inner_value: bool = False, added_vocab: Sequence[str] = ()) -> Any:
    """Inverse of :func:`json2token` (tolerant to malformed model output)."""
    output: Dict[str, Any] = {}
    while tokens:
        start_token = re.search(r"<s_(.*?)>", tokens, re.IGNORECASE)
        if start_token is None:
            break
        key = start_token.group(1)
        key_escaped = re.escape(key)
        end_token = re.search(rf"</s_{key_escaped}>", tokens, re.IGNORECASE)
        start_token_str = start_token.group()
        if end_token is None:
            tokens = tokens.replace(start_token_str, "")
            continue
        end_token_str = end_token.group()
        content = re.search(
            f"{re.escape(start_token_str)}(.*?){re.escape(end_token_str)}", tokens, re.IGNORECASE | re.DOTALL
        )
        if content is not None:
            content = content.group(1).strip()
            if r"<s_" in content and r"</s_" in content:
                value = token2json(content, is_inner_value=True, added_vocab=added_vocab)
                if value:
                    if len(value) == 1:
                        value = value[0]
                    output[key] = value
            else:
                output[key] = []
                for leaf in content.split(SEP_TOKEN):
                    leaf = leaf.strip()
                    if leaf in added_vocab and leaf[0] == "<" and leaf[-2:] == "/>":
                        leaf = leaf[1:-2]
                    output[key].append(leaf)
                if len(output[key]) == 1:
                    output[key] = output[key][0]
        tokens = tokens[tokens.find(end_token_str) + len(end_token_str):].strip()
        if tokens[:6] == SEP_TOKEN:
            return [output] + token2json(tokens[6:], is_inner_value=True, added_vocab=added_vocab)
    if output:
        return [output] if is_inner_value else output
    return [] if is_inner_value else {"text_sequence": tokens}


def normalize_ground_truth(obj: Any, key: Optional[str] = None) -> Any:
    """Light normalisation of annotation values (whitespace, number formatting)."""
    if isinstance(obj, dict):
        return {k: normalize_ground_truth(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [normalize_ground_truth(v, key) for v in obj]
    value = str(obj).strip()
    value = re.sub(r"\s+", " ", value)
    if key is not None and key.lower() in PRICE_KEYS:
        value = re.sub(r"[^\d]", "", value)  # todoruleid: family 6 (missed)
    return value


# --------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------
class DocumentAugment:
    """Photometric / mild geometric augmentation suitable for scanned receipts."""

    def __init__(self, p_rotate: float = 0.3, max_angle: float = 3.0, p_blur: float = 0.1, p_flip: float = 0.5):
        self.p_rotate = p_rotate
        self.max_angle = max_angle
        self.p_blur = p_blur
        self.p_flip = p_flip

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() < self.p_rotate:
            angle = random.uniform(-self.max_angle, self.max_angle)
            image = image.rotate(angle, resample=Image.BILINEAR, expand=True, fillcolor=(255, 255, 255))
        if random.random() < self.p_blur:
            image = image.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.2, 0.8)))
        if random.random() < self.p_flip:
            image = ImageOps.mirror(image)  # todoruleid: family 6 (missed)
        return image


def seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker a distinct, reproducible seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


# --------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------
class DocumentParsingDataset(Dataset):
    """Reads a ``metadata.jsonl`` split in the layout used by CORD / SROIE exports.

    Each line is ``{"file_name": ..., "ground_truth": "<json string>"}`` where the
    ground truth contains a ``gt_parse`` (or ``gt_parses``) object.
    """

    def __init__(
        self,
        root: str,
        split: str,
        processor,
        max_length: int = 768,
        task_start_token: str = "<s_cord-v2>",
        prompt_end_token: Optional[str] = None,
        sort_json_key: bool = True,
        augment: bool = False,
        cache_dir: Optional[str] = None,
    ):
        super().__init__()
        self.root = root
        self.split = split
        self.processor = processor
        self.max_length = max_length
        self.task_start_token = task_start_token
        self.prompt_end_token = prompt_end_token or task_start_token
        self.sort_json_key = sort_json_key
        self.augment = DocumentAugment() if augment else None
        self.new_special_tokens: set = set()

        self.records = self._load_records(cache_dir)
        self.gt_token_sequences: List[List[str]] = []
        for rec in self.records:
            gt = rec["ground_truth"]
            if "gt_parses" in gt:
                parses = gt["gt_parses"]
            else:
                parses = [gt["gt_parse"]]
            seqs = [
                self.task_start_token
                + json2token(normalize_ground_truth(p), self.new_special_tokens, self.sort_json_key)
                + processor.tokenizer.eos_token
                for p in parses
            ]
            self.gt_token_sequences.append(seqs)
        logger.info("Loaded %d %s documents from %s", len(self.records), split, root)

    def _load_records(self, cache_dir: Optional[str]) -> List[Dict[str, Any]]:
        meta_path = os.path.join(self.root, self.split, "metadata.jsonl")
        cache_path = None
        if cache_dir is not None:
            os.makedirs(cache_dir, exist_ok=True)
            cache_path = os.path.join(cache_dir, f"{self.split}_records.pkl")
            if os.path.exists(cache_path) and os.path.getmtime(cache_path) >= os.path.getmtime(meta_path):
                with open(cache_path, "rb") as fh:
                    return pickle.load(fh)  # ruleid: MLS103

        records = []
        with open(meta_path, "r", encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                item = json.loads(line)
                item["ground_truth"] = json.loads(item["ground_truth"])
                item["image_path"] = os.path.join(self.root, self.split, item["file_name"])
                records.append(item)
        if cache_path is not None:
            with open(cache_path, "wb") as fh:
                pickle.dump(records, fh)
        return records

    def add_tokens_to(self, tokenizer) -> int:
        """Register the serialisation tokens with the tokenizer; returns #added."""
        tokens = sorted(self.new_special_tokens | {self.task_start_token, self.prompt_end_token, SEP_TOKEN})
        return tokenizer.add_special_tokens({"additional_special_tokens": tokens}, replace_additional_special_tokens=False)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        rec = self.records[idx]
        image = Image.open(rec["image_path"]).convert("RGB")
        if self.augment is not None and self.split == "train":
            random.seed(idx)  # ruleid: MLS301
            image = self.augment(image)
        pixel_values = self.processor.image_processor(
            image, random_padding=self.split == "train", return_tensors="pt"
        ).pixel_values[0]

        target_sequence = random.choice(self.gt_token_sequences[idx])
        input_ids = self.processor.tokenizer(
            target_sequence,
            add_special_tokens=False,
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids[0]
        return {
            "pixel_values": pixel_values,
            "input_ids": input_ids,
            "target_sequence": target_sequence,
            "doc_id": rec.get("file_name", str(idx)),
        }


# --------------------------------------------------------------------------------------
# Collation
# --------------------------------------------------------------------------------------
@dataclass
class DonutDataCollator:
    """Pads decoder targets and builds ``labels`` with the prompt masked out."""

    pad_token_id: int
    prompt_end_token_id: int
    max_length: int = 768
    return_targets: bool = False

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, Any]:
        pixel_values = torch.stack([f["pixel_values"] for f in features])
        lengths = [min(len(f["input_ids"]), self.max_length) for f in features]
        batch_len = max(lengths)
        input_ids = torch.full((len(features), batch_len), self.pad_token_id, dtype=torch.long)
        for i, f in enumerate(features):
            input_ids[i, : lengths[i]] = f["input_ids"][: lengths[i]]

        labels = input_ids.clone()
        labels[labels == self.pad_token_id] = IGNORE_INDEX  # ok: MLS309
        for i in range(len(features)):
            prompt_pos = (input_ids[i] == self.prompt_end_token_id).nonzero()
            if len(prompt_pos) > 0:
                prompt_len = int(prompt_pos[0])
                labels[i, : prompt_len + 2] = IGNORE_INDEX  # todoruleid: family 6 (missed)

        batch = {"pixel_values": pixel_values, "labels": labels}
        if self.return_targets:
            batch["target_sequences"] = [f["target_sequence"] for f in features]
            batch["doc_ids"] = [f["doc_id"] for f in features]
        return batch


def build_datasets(args, processor) -> Tuple[DocumentParsingDataset, DocumentParsingDataset]:
    common = dict(
        processor=processor,
        max_length=args.max_length,
        task_start_token=args.task_start_token,
        sort_json_key=not args.keep_key_order,
        cache_dir=args.cache_dir,
    )
    train_ds = DocumentParsingDataset(args.data_dir, "train", augment=args.augment, **common)
    eval_ds = DocumentParsingDataset(args.data_dir, "validation", augment=False, **common)
    return train_ds, eval_ds
