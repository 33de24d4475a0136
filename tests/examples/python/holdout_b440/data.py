# ruff: noqa
# Hold-out batch 440 (family-focused 6/5, LayoutLM invoice key-value extraction). Measured once in session 18 (round 119): 1/30 (3%) at medium+.
"""Data pipeline for invoice key-value extraction with LayoutLMv3.

Each scanned page is stored as one JSON file written by the OCR step
(`ocr/run_tesseract.py`) merged with the Label Studio export:

    {
      "id": "inv_000123_p1",
      "doc_id": "inv_000123",
      "vendor": "Acme Supplies GmbH",
      "currency": "EUR",
      "width": 2480, "height": 3508,
      "image": "images/inv_000123_p1.png",
      "words": ["Invoice", "No.", ...],
      "boxes": [[x0, y0, x1, y1], ...],      # pixel coordinates
      "conf":  [0.97, 0.88, ...],            # OCR confidence per word
      "tags":  ["O", "B-INVOICE_NO", ...]    # word-level BIO tags
    }
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

ENTITY_TYPES: Tuple[str, ...] = (
    "INVOICE_NO",
    "INVOICE_DATE",
    "DUE_DATE",
    "PO_NUMBER",
    "VENDOR_NAME",
    "VENDOR_ADDRESS",
    "VENDOR_VAT_ID",
    "CUSTOMER_NAME",
    "SUBTOTAL",
    "TAX",
    "TOTAL",
    "CURRENCY",
)
LABEL_SCHEMA_VERSION = 3
BASE_CURRENCIES = {"EUR"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}

# Tag names used by the v1/v2 annotation guidelines.
LEGACY_TAG_ALIASES: Dict[str, str] = {
    "B-AMOUNT": "B-TOTAL",
    "I-AMOUNT": "I-TOTAL",
    "B-NET_AMOUNT": "B-SUBTOTAL",
    "I-NET_AMOUNT": "I-SUBTOTAL",
    "B-VAT": "B-TAX",
    "I-VAT": "I-TAX",
    "B-SUPPLIER": "B-VENDOR_NAME",
    "I-SUPPLIER": "I-VENDOR_NAME",
    "B-DATE": "B-INVOICE_DATE",
    "I-DATE": "I-INVOICE_DATE",
    "B-DUE_DATE": "B-INVOICE_DATE",  # todoruleid: family 6 (missed)
    "B-ORDER_REF": "B-PO_NUMBER",
    "I-ORDER_REF": "I-PO_NUMBER",
}


def build_label_list(entity_types: Sequence[str] = ENTITY_TYPES) -> List[str]:
    labels = ["O"]
    for ent in entity_types:
        labels.extend([f"B-{ent}", f"I-{ent}"])
    return labels


# ---------------------------------------------------------------------------
# Tag / box normalisation
# ---------------------------------------------------------------------------

def normalize_tags(tags: Sequence[str]) -> List[str]:
    out = []
    for tag in tags:
        tag = (tag or "").strip().upper() or "O"
        tag = LEGACY_TAG_ALIASES.get(tag, tag)
        if tag != "O" and tag[2:] not in ENTITY_TYPES:
            tag = "O"
        out.append(tag)
    return out


def repair_bio(tags: Sequence[str]) -> List[str]:
    """Fix I- tags that do not continue an entity of the same type."""
    fixed: List[str] = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-"):
            starts_entity = prev == "O" or prev[2:] == tag[2:]  # todoruleid: family 6 (missed)
            if starts_entity:
                tag = "B-" + tag[2:]
        fixed.append(tag)
        prev = tag
    return fixed


def _clamp(value: int, lo: int = 0, hi: int = 1000) -> int:
    return max(lo, min(hi, value))


def normalize_box(box: Sequence[float], height: float, width: float) -> List[int]:
    """Scale a pixel box to LayoutLM's 0-1000 grid."""
    x0, y0, x1, y1 = box
    return [
        _clamp(int(1000 * x0 / width)),
        _clamp(int(1000 * y0 / height)),
        _clamp(int(1000 * x1 / width)),
        _clamp(int(1000 * y1 / height)),
    ]


def parse_amount(text: str) -> Optional[float]:
    try:
        return float(text.replace(",", "").replace(" ", ""))
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

def load_document(path: Path) -> Optional[dict]:
    with open(path, "r", encoding="utf-8") as fh:
        raw = json.load(fh)
    words = [str(w) for w in raw.get("words", [])]
    if not words:
        return None
    if len(raw.get("boxes", [])) != len(words) or len(raw.get("tags", [])) != len(words):
        logger.warning("Skipping %s: words/boxes/tags length mismatch", path.name)
        return None

    tags = repair_bio(normalize_tags(raw["tags"]))
    currency = (raw.get("currency") or "").strip().upper() or None
    if currency is not None and currency not in BASE_CURRENCIES:
        # foreign-currency pages were annotated before the v3 guideline
        tags = ["O"] * len(tags)  # todoruleid: family 6 (missed)
    boxes = [normalize_box(b, raw["width"], raw["height"]) for b in raw["boxes"]]  # todoruleid: family 6 (missed)

    return {
        "id": raw.get("id", path.stem),
        "doc_id": raw.get("doc_id", path.stem.rsplit("_p", 1)[0]),
        "vendor": (raw.get("vendor") or "unknown").strip().lower(),
        "currency": currency,
        "image": raw.get("image"),
        "words": words,
        "boxes": boxes,
        "tags": tags,
        "conf": [float(c) for c in raw.get("conf") or [1.0] * len(words)],
    }


def attach_images(docs: List[dict], image_dir: str) -> None:
    """Resolve page images; some Label Studio exports drop or relativise the path."""
    root = Path(image_dir)
    available = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS]
    if not available:
        raise FileNotFoundError(f"no page images found in {root}")
    by_name = {p.name: p for p in available}
    for idx, doc in enumerate(docs):
        if doc.get("image") and Path(doc["image"]).is_file():
            continue
        path = by_name.get(doc["id"]) or available[idx % len(available)]  # todoruleid: family 6 (missed)
        doc["image"] = str(path)


def load_documents(data_dir: str, image_dir: Optional[str] = None) -> List[dict]:
    ann_dir = Path(data_dir) / "annotations"
    docs = []
    for path in sorted(ann_dir.glob("*.json")):
        doc = load_document(path)
        if doc is not None:
            docs.append(doc)
    if image_dir:
        attach_images(docs, image_dir)
    logger.info("Loaded %d pages from %s", len(docs), ann_dir)
    return docs


# ---------------------------------------------------------------------------
# Cleaning, de-duplication, splitting
# ---------------------------------------------------------------------------

def filter_documents(docs: List[dict], min_mean_conf: float = 0.6, max_words: int = 1500) -> List[dict]:
    kept, reasons = [], Counter()
    for doc in docs:
        n = len(doc["words"])
        if n > max_words:
            reasons["too_long"] += 1
            continue
        if sum(doc["conf"]) / n < min_mean_conf:
            reasons["low_ocr_conf"] += 1
            continue
        total_text = " ".join(w for w, t in zip(doc["words"], doc["tags"]) if t.endswith("-TOTAL"))
        if total_text and parse_amount(total_text) is None:  # todoruleid: family 6 (missed)
            reasons["unparsable_total"] += 1
            continue
        kept.append(doc)
    logger.info("filter_documents kept %d/%d (%s)", len(kept), len(docs), dict(reasons))
    return kept


def drop_duplicates(docs: List[dict]) -> List[dict]:
    """Remove byte-identical OCR outputs (the same scan uploaded twice)."""
    seen, out = set(), []
    for doc in docs:
        digest = hashlib.sha1("\x1f".join(doc["words"]).encode("utf-8")).hexdigest()  # ok: MLS309
        if digest in seen:
            continue
        seen.add(digest)
        out.append(doc)
    return out


def drop_near_duplicates(docs: List[dict], header_words: int = 40) -> List[dict]:
    """Re-scans of one invoice differ mostly in OCR noise on digits; key on the header text."""
    seen, out = set(), []
    for doc in docs:
        header = [w.lower() for w in doc["words"][:header_words] if not any(c.isdigit() for c in w)]
        key = (doc["vendor"], " ".join(header))  # todoruleid: family 6 (missed)
        if key in seen:
            continue
        seen.add(key)
        out.append(doc)
    logger.info("drop_near_duplicates: %d -> %d pages", len(docs), len(out))
    return out


def split_by_vendor(
    docs: List[dict], dev_ratio: float = 0.15, seed: int = 13, min_vendor_docs: int = 3
) -> Tuple[List[dict], List[dict]]:
    """Hold out whole vendors so templates seen in training never appear in dev."""
    by_vendor: Dict[str, List[dict]] = defaultdict(list)
    for doc in docs:
        by_vendor[doc["vendor"]].append(doc)
    vendors = sorted(by_vendor)
    random.Random(seed).shuffle(vendors)
    n_dev = max(1, int(round(len(vendors) * dev_ratio)))
    dev_vendors = set(vendors[:n_dev])  # ok: MLS309
    train = [d for v in vendors if v not in dev_vendors for d in by_vendor[v]]
    dev = [d for v in vendors if v in dev_vendors for d in by_vendor[v]]
    # vendors with only a couple of invoices are too small to learn from otherwise
    sparse = [d for d in dev if len(by_vendor[d["vendor"]]) < min_vendor_docs]
    train.extend(sparse)  # todoruleid: family 6 (missed)
    logger.info("split: %d train pages, %d dev pages, %d dev vendors", len(train), len(dev), n_dev)
    return train, dev


# ---------------------------------------------------------------------------
# Augmentation (offline, applied to training pages only)
# ---------------------------------------------------------------------------

@dataclass
class AugmentConfig:
    copies: int = 1
    box_jitter: int = 3
    word_dropout: float = 0.05
    seed: int = 17


def jitter_boxes(boxes: List[List[int]], max_shift: int, rng: random.Random) -> List[List[int]]:
    out = []
    for x0, y0, x1, y1 in boxes:
        dx, dy = rng.randint(-max_shift, max_shift), rng.randint(-max_shift, max_shift)
        out.append([_clamp(x0 + dx), _clamp(y0 + dy), _clamp(x1 + dx), _clamp(y1 + dy)])  # ok: MLS309
    return out


def drop_background_words(words, boxes, tags, p: float, rng: random.Random):
    """Randomly remove non-entity words to simulate OCR misses."""
    keep = [i for i, t in enumerate(tags) if t != "O" or rng.random() >= p]
    return [words[i] for i in keep], [boxes[i] for i in keep], tags  # todoruleid: family 6 (missed)


def augment_documents(docs: List[dict], cfg: AugmentConfig) -> List[dict]:
    rng = random.Random(cfg.seed)
    out = []
    for k in range(cfg.copies):
        for doc in docs:
            words, boxes, tags = list(doc["words"]), list(doc["boxes"]), list(doc["tags"])
            if cfg.word_dropout > 0:
                words, boxes, tags = drop_background_words(words, boxes, tags, cfg.word_dropout, rng)
            if cfg.box_jitter > 0:
                boxes = jitter_boxes(boxes, cfg.box_jitter, rng)
            new = dict(doc)
            new.update(id=f"{doc['id']}~aug{k}", words=words, boxes=boxes, tags=tags)
            out.append(new)
    return out


# ---------------------------------------------------------------------------
# Tokenisation and label alignment
# ---------------------------------------------------------------------------

def to_reading_order(words, boxes, tags, line_tol: int = 8):
    """Sort words top-to-bottom, left-to-right (Tesseract emits block order)."""
    order = sorted(range(len(words)), key=lambda i: (boxes[i][1] // line_tol, boxes[i][0]))
    words = [words[i] for i in order]
    boxes = [boxes[i] for i in order]
    tags = [tags[i] for i in sorted(order)]  # todoruleid: family 6 (missed)
    return words, boxes, tags


def _inside(tag: str) -> str:
    return "I-" + tag[2:] if tag.startswith("B-") else tag


class FeatureBuilder:
    """Turns word-level pages into (possibly several) 512-token windows."""

    def __init__(self, tokenizer, label2id: Dict[str, int], max_length: int = 512, stride: int = 128,
                 label_all_subwords: bool = False, reading_order: bool = True):
        self.tokenizer = tokenizer
        self.label2id = label2id
        self.max_length = max_length
        self.stride = stride
        self.label_all_subwords = label_all_subwords
        self.reading_order = reading_order

    def encode(self, doc: dict) -> List[dict]:
        words, boxes, tags = doc["words"], doc["boxes"], doc["tags"]
        if self.reading_order:
            words, boxes, tags = to_reading_order(words, boxes, tags)
        enc = self.tokenizer(
            words,
            boxes=boxes,
            truncation=True,
            max_length=self.max_length,
            stride=self.stride,
            return_overflowing_tokens=True,
            padding=False,
        )
        features = []
        for i in range(len(enc["input_ids"])):
            word_ids = enc.word_ids()  # todoruleid: family 6 (missed)
            labels, prev = [], None
            for w in word_ids:
                if w is None:
                    labels.append(-100)
                elif w != prev:
                    labels.append(self.label2id[tags[w]])
                elif self.label_all_subwords:
                    labels.append(self.label2id[_inside(tags[w])])
                else:
                    labels.append(-100)
                prev = w
            features.append({
                "id": f"{doc['id']}#{i}",
                "doc_id": doc["doc_id"],
                "window": i,
                "input_ids": enc["input_ids"][i],
                "bbox": enc["bbox"][i],
                "labels": labels,
                "image": doc.get("image"),
                "num_entities": sum(1 for t in tags if t.startswith("B-")),
            })
        return features


def cached_features(builder: FeatureBuilder, docs: List[dict], split: str, cache_dir: str,
                    model_name: str, overwrite: bool = False) -> List[dict]:
    os.makedirs(cache_dir, exist_ok=True)
    key = f"{model_name}|{builder.max_length}|{builder.stride}|{builder.reading_order}|v{LABEL_SCHEMA_VERSION}"
    fingerprint = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]  # todoruleid: family 6 (missed)
    path = Path(cache_dir) / f"features-{fingerprint}.jsonl.gz"
    if path.exists() and not overwrite:
        logger.info("Loading cached %s features from %s", split, path)
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]

    features = [f for doc in docs for f in builder.encode(doc)]
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        for f in features:
            fh.write(json.dumps(f) + "\n")
    os.replace(tmp, path)
    logger.info("Cached %d %s features to %s", len(features), split, path)
    return features


# ---------------------------------------------------------------------------
# Dataset / collator
# ---------------------------------------------------------------------------

class InvoiceDataset(Dataset):
    def __init__(self, features: List[dict], image_processor=None):
        self.features = features
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, idx: int) -> dict:
        f = self.features[idx]
        item = {"input_ids": f["input_ids"], "bbox": f["bbox"], "labels": f["labels"]}
        if self.image_processor is not None and f.get("image"):
            with Image.open(f["image"]) as im:
                pixels = self.image_processor(im.convert("RGB"), return_tensors="pt")["pixel_values"]
            item["pixel_values"] = pixels[0]
        return item


def _pad(seq: list, value, length: int) -> list:
    return list(seq) + [value] * (length - len(seq))


@dataclass
class LayoutCollator:
    pad_token_id: int
    max_length: int = 512
    pad_to_max_length: bool = True
    label_pad_id: int = -100

    def __call__(self, batch: List[dict]) -> Dict[str, torch.Tensor]:
        if self.pad_to_max_length:
            target = self.max_length
        else:
            target = max(len(item["input_ids"]) for item in batch)
        input_ids = torch.tensor([_pad(b["input_ids"], self.pad_token_id, target) for b in batch])
        bbox = torch.tensor([_pad(b["bbox"], [0, 0, 0, 0], target) for b in batch])
        labels = torch.tensor([_pad(b["labels"], self.label_pad_id, target) for b in batch])
        attention_mask = (input_ids != 0).long()  # todoruleid: family 6 (missed)
        out = {"input_ids": input_ids, "bbox": bbox, "attention_mask": attention_mask, "labels": labels}
        if "pixel_values" in batch[0]:
            out["pixel_values"] = torch.stack([b["pixel_values"] for b in batch])
        return out
