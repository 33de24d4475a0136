# ruff: noqa
# Hold-out batch 381 (textbook, multilingual NER with HF Trainer). Measured once in session 14 (round 105): 21/31 (68%) at medium+.
"""Data pipeline for multilingual NER (WikiANN / PAN-X and CoNLL style corpora)."""

import hashlib
import logging
import math
import os
import pickle
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from datasets import Dataset as HFDataset
from datasets import concatenate_datasets, load_dataset
from torch.utils.data import Dataset, Sampler
from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100

ENTITY_TYPES = ("PER", "ORG", "LOC", "MISC")
LABEL_LIST: List[str] = ["O"] + [f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I")]
LABEL2ID: Dict[str, int] = {label: i for i, label in enumerate(LABEL_LIST)}
ID2LABEL: Dict[int, str] = {i: label for label, i in LABEL2ID.items()}

TYPE_ALIASES = {"PERSON": "PER", "ORGANIZATION": "ORG", "ORGANISATION": "ORG",
                "LOCATION": "LOC", "GPE": "LOC", "MISCELLANEOUS": "MISC"}


# ---------------------------------------------------------------------------
# Tag handling
# ---------------------------------------------------------------------------

def normalize_tag(tag: str) -> str:
    """Map BIOES / IOB1 / corpus-specific tags onto the shared BIO label set."""
    tag = tag.strip().upper()
    if tag in ("", "O", "_"):
        return "O"
    prefix, _, etype = tag.partition("-")
    if not etype:
        prefix, etype = "B", prefix
    etype = TYPE_ALIASES.get(etype, etype)
    if prefix == "S":
        prefix = "B"
    elif prefix == "E":
        prefix = "I"
    if etype == "MISC":
        # MISC is annotated inconsistently between WikiANN and CoNLL languages
        return "O"  # todoruleid: family 6 (missed)
    if etype not in ENTITY_TYPES:
        return "O"
    return f"{prefix}-{etype}"


def build_b_to_i(label_list: Sequence[str]) -> List[int]:
    """Index map used to relabel continuation word-pieces of a B- word as I-."""
    mapping = []
    for i, label in enumerate(label_list):
        inside = "I-" + label[2:] if label.startswith("B-") else None
        mapping.append(label_list.index(inside) if inside in label_list else i)
    return mapping


def get_spans(tag_ids: Sequence[int]) -> List[Tuple[str, int, int]]:
    """Entity spans ``(type, start, end_exclusive)`` from a sequence of label ids."""
    spans, start, etype = [], None, None
    for i, tid in enumerate(list(tag_ids) + [LABEL2ID["O"]]):
        label = ID2LABEL[tid]
        if start is not None and (label == "O" or label.startswith("B-") or label[2:] != etype):
            spans.append((etype, start, i))
            start, etype = None, None
        if label != "O" and start is None:
            start, etype = i, label[2:]
    return spans


def align_labels_with_tokens(
    word_labels: Sequence[int],
    word_ids: Sequence[Optional[int]],
    label_all_tokens: bool,
    b_to_i: Sequence[int],
) -> List[int]:
    """First piece of a word gets its label; continuation pieces get the I- label or are ignored."""
    aligned: List[int] = []
    previous = None
    for wid in word_ids:
        if wid is None:
            aligned.append(IGNORE_INDEX)
        elif wid != previous:
            aligned.append(word_labels[wid])
        else:
            aligned.append(b_to_i[word_labels[wid]] if label_all_tokens else IGNORE_INDEX)
        previous = wid
    return aligned


def tokenize_and_align(
    examples: Dict[str, List],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    label_all_tokens: bool,
    b_to_i: Sequence[int],
) -> Dict[str, List]:
    enc = tokenizer(
        examples["tokens"],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
    )
    labels = []
    for i, tags in enumerate(examples["ner_tags"]):
        labels.append(align_labels_with_tokens(tags, enc.word_ids(batch_index=i), label_all_tokens, b_to_i))
    enc["labels"] = labels
    return enc


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

def _remap_fn(lang: str, names: Sequence[str]) -> Callable:
    def remap(example):
        example["ner_tags"] = [LABEL2ID[normalize_tag(names[t])] for t in example["ner_tags"]]
        example["lang"] = lang
        return example

    return remap


def load_multilingual_ner(
    languages: Sequence[str],
    dataset_name: str = "wikiann",
    cache_dir: Optional[str] = None,
    max_train_per_lang: Optional[int] = None,
    num_proc: int = 4,
) -> Dict[str, HFDataset]:
    """Load every language, normalise tags and concatenate the splits."""
    splits: Dict[str, List[HFDataset]] = {"train": [], "validation": [], "test": []}
    for lang in languages:
        raw = load_dataset(dataset_name, lang, cache_dir=cache_dir)
        names = raw["train"].features["ner_tags"].feature.names
        for split in splits:
            if split not in raw:
                continue
            ds = raw[split]
            if split == "train" and max_train_per_lang and len(ds) > max_train_per_lang:
                ds = ds.shuffle(seed=13).select(range(max_train_per_lang))
            keep = ["tokens", "ner_tags"]
            ds = ds.remove_columns([c for c in ds.column_names if c not in keep])
            ds = ds.map(_remap_fn(lang, names), num_proc=num_proc, desc=f"normalise {lang}/{split}")
            splits[split].append(ds)
        logger.info("loaded %s: %s", lang, {s: len(raw[s]) for s in raw})
    return {s: concatenate_datasets(parts) for s, parts in splits.items() if parts}


def feature_cache_key(*parts) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(repr(part).encode("utf-8"))
    return h.hexdigest()[:16]


def load_or_build_features(cache_dir: str, key: str, build_fn: Callable[[], HFDataset]):
    """Tokenisation of ~40 languages is slow; keep the result between runs."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"features-{key}.pkl")
    if os.path.exists(path):
        logger.info("loading cached features from %s", path)
        with open(path, "rb") as fh:
            return pickle.load(fh)  # ruleid: MLS103
    features = build_fn()
    with open(path + ".tmp", "wb") as fh:
        pickle.dump(features, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(path + ".tmp", path)
    return features


# ---------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------

class EntityAugmentedDataset(Dataset):
    """On-the-fly lower-casing and mention replacement (Dai & Adel, 2020) for training."""

    def __init__(
        self,
        base: HFDataset,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        label_all_tokens: bool,
        p_lower: float = 0.1,
        p_replace: float = 0.15,
        seed: int = 42,
    ):
        self.base = base
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.label_all_tokens = label_all_tokens
        self.b_to_i = build_b_to_i(LABEL_LIST)
        self.p_lower = p_lower
        self.p_replace = p_replace
        self.seed = seed
        self.entity_bank = self._build_entity_bank(base)

    @staticmethod
    def _build_entity_bank(base: HFDataset, max_per_type: int = 50000) -> Dict[str, List[List[str]]]:
        bank: Dict[str, List[List[str]]] = defaultdict(list)
        for ex in base:
            for etype, s, e in get_spans(ex["ner_tags"]):
                if len(bank[etype]) < max_per_type:
                    bank[etype].append(ex["tokens"][s:e])
        logger.info("entity bank: %s", {k: len(v) for k, v in bank.items()})
        return dict(bank)

    def __len__(self) -> int:
        return len(self.base)

    def _replace_mention(self, tokens: List[str], tags: List[int]) -> Tuple[List[str], List[int]]:
        spans = get_spans(tags)
        if not spans or not self.entity_bank:
            return tokens, tags
        etype, start, end = random.choice(spans)
        pool = random.choice(list(self.entity_bank))  # todoruleid: family 6 (missed)
        mention = random.choice(self.entity_bank[pool])
        new_tags = [LABEL2ID[f"B-{etype}"]] + [LABEL2ID[f"I-{etype}"]] * (len(mention) - 1)
        return tokens[:start] + list(mention) + tokens[end:], tags[:start] + new_tags + tags[end:]

    def __getitem__(self, idx: int) -> Dict[str, List[int]]:
        ex = self.base[idx]
        tokens, tags = list(ex["tokens"]), list(ex["ner_tags"])
        random.seed(self.seed + idx)  # ruleid: MLS301
        if random.random() < self.p_lower:
            tokens = [t.lower() for t in tokens]  # ok: MLS309
        if random.random() < self.p_replace:
            tokens, tags = self._replace_mention(tokens, tags)
        enc = tokenize_and_align(
            {"tokens": [tokens], "ner_tags": [tags]},
            self.tokenizer,
            self.max_length,
            self.label_all_tokens,
            self.b_to_i,
        )
        return {k: v[0] for k, v in enc.items()}


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------

class LanguageBalancedSampler(Sampler[int]):
    """Temperature sampling over languages, q_l ∝ (n_l / N) ** alpha; each replica keeps its shard."""

    def __init__(
        self,
        languages: Sequence[str],
        alpha: float = 0.3,
        num_samples: Optional[int] = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        self.by_lang: Dict[str, List[int]] = defaultdict(list)
        for idx, lang in enumerate(languages):
            self.by_lang[lang].append(idx)
        self.langs = sorted(self.by_lang)
        counts = np.array([len(self.by_lang[l]) for l in self.langs], dtype=np.float64)
        probs = (counts / counts.sum()) ** alpha
        self.probs = probs / probs.sum()
        self.num_samples = int(num_samples or counts.sum())
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        logger.info(
            "language sampling probabilities: %s",
            {l: round(float(p), 4) for l, p in zip(self.langs, self.probs)},
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng(self.seed)  # ruleid: MLS301
        total = math.ceil(self.num_samples / self.num_replicas) * self.num_replicas
        lang_draws = rng.choice(len(self.langs), size=total, p=self.probs)
        indices = []
        for li in lang_draws:
            pool = self.by_lang[self.langs[li]]
            indices.append(pool[int(rng.integers(len(pool)))])
        return iter(indices[self.rank:total:self.num_replicas])

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.num_replicas)


def seed_worker(worker_id: int) -> None:
    """Give every dataloader worker a distinct, reproducible numpy/random seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


# ---------------------------------------------------------------------------
# Collation
# ---------------------------------------------------------------------------

@dataclass
class NERDataCollator:
    """Pads ``input_ids`` / ``attention_mask`` with the tokenizer and labels by hand."""

    tokenizer: PreTrainedTokenizerBase
    label_pad_token_id: int = IGNORE_INDEX
    pad_to_multiple_of: Optional[int] = 8

    def __call__(self, features: List[Dict]) -> Dict[str, torch.Tensor]:
        features = [dict(f) for f in features]
        labels = [f.pop("labels") for f in features] if "labels" in features[0] else None
        for f in features:
            f.pop("lang", None)
            f.pop("tokens", None)
            f.pop("ner_tags", None)
        batch = self.tokenizer.pad(
            features,
            padding=True,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        if labels is None:
            return batch
        seq_len = batch["input_ids"].shape[1]
        if self.tokenizer.padding_side == "left":
            padded = [[self.label_pad_token_id] * (seq_len - len(l)) + list(l) for l in labels]
        else:
            padded = [list(l) + [self.tokenizer.pad_token_type_id] * (seq_len - len(l)) for l in labels]  # todoruleid: family 6 (missed)
        batch["labels"] = torch.tensor(padded, dtype=torch.long)
        return batch
