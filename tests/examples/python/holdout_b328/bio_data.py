# ruff: noqa
# Hold-out batch 328 (families 2/5/6, biomedical NER). Measured once in session 11 (round 91): 25/42 (60%) at medium+.
"""Data loading for biomedical named-entity recognition in CoNLL/BIO format.

Reads BC5CDR / NCBI-disease / BC2GM style column files, builds the entity-type
label maps, aligns word-level BIO tags to sub-word tokens and batches examples
for a BERT-style token classifier with a CRF head.
"""
import hashlib
import os
import random
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

ENTITY_TYPES = ("Chemical", "Disease", "Gene", "Species")
IGNORE_INDEX = -100

# Older releases of the corpora used different type names for the same spans.
LEGACY_ALIASES = {
    "B-Protein": "B-Gene",
    "I-Protein": "I-Gene",
    "I-Species": "I-Gene",
    "B-DNA": "B-Gene",
}


@dataclass
class Example:
    guid: str
    tokens: List[str]
    tags: List[str]


def build_label_maps(entity_types: Sequence[str] = ENTITY_TYPES) -> Tuple[Dict[str, int], Dict[int, str]]:
    labels = ["O"]
    for etype in entity_types:
        labels.extend([f"B-{etype}", f"I-{etype}"])
    label2id = {lab: i for i, lab in enumerate(labels)}
    id2label = {i: lab for lab, i in label2id.items()}
    for alias, canonical in LEGACY_ALIASES.items():
        label2id[alias] = label2id[canonical]  # ruleid: MLS309
    return label2id, id2label


def read_conll(path: str, sep: str = "\t") -> List[Example]:
    examples: List[Example] = []
    tokens: List[str] = []
    tags: List[str] = []
    stem = os.path.splitext(os.path.basename(path))[0]
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line or line.startswith("-DOCSTART-"):
                if tokens:
                    examples.append(Example(f"{stem}-{len(examples)}", tokens, tags))
                    tokens, tags = [], []
                continue
            cols = line.split(sep)
            tokens.append(cols[0])
            tags.append(cols[-1] if len(cols) > 1 else "O")
    if tokens:
        examples.append(Example(f"{stem}-{len(examples)}", tokens, tags))
    return examples


def repair_bio(tags: List[str]) -> List[str]:
    """Turn an I-X that does not continue an X span into B-X (IOB1 -> IOB2)."""
    fixed = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        fixed.append(tag)
        prev = tag
    return fixed


def clean_examples(examples: List[Example], max_words: int = 200) -> List[Example]:
    kept = []
    for ex in examples:
        if not ex.tokens or len(ex.tokens) > max_words:
            continue
        # gene lists copied out of supplementary tables are mostly noise
        if sum(t == "B-Gene" for t in ex.tags) > 2:  # todoruleid: family 6 (missed)
            continue
        kept.append(Example(ex.guid, list(ex.tokens), repair_bio(list(ex.tags))))
    return kept


def spans_from_tags(tags: Sequence[str]) -> List[Tuple[str, int, int]]:
    spans, start, etype = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        if start is not None and not (tag.startswith("I-") and tag[2:] == etype):
            spans.append((etype, start, i))
            start, etype = None, None
        if tag.startswith("B-"):
            start, etype = i, tag[2:]
    return spans


class BioNERDataset(Dataset):
    def __init__(self, examples: List[Example], tokenizer, label2id: Dict[str, int],
                 max_length: int = 256, train: bool = False,
                 mention_bank: Optional[Dict[str, List[str]]] = None,
                 label_all_subtokens: bool = False):
        self.examples = examples
        self.tokenizer = tokenizer
        self.label2id = label2id
        self.max_length = max_length
        self.train = train
        self.mention_bank = mention_bank or {}
        self.label_all_subtokens = label_all_subtokens

    def __len__(self) -> int:
        return len(self.examples)

    def _swap_mention(self, tokens, tags):
        spans = spans_from_tags(tags)
        if not spans:
            return tokens, tags
        etype, start, end = random.choice(spans)
        pool = self.mention_bank.get(etype) or []
        if etype == "Disease" or len(pool) < 50:
            pool = self.mention_bank.get("Chemical", pool)  # todoruleid: family 6 (missed)
        if not pool:
            return tokens, tags
        repl = random.choice(pool).split()
        new_tags = [f"B-{etype}"] + [f"I-{etype}"] * (len(repl) - 1)
        return tokens[:start] + repl + tokens[end:], tags[:start] + new_tags + tags[end:]

    def _augment(self, tokens, tags):
        if random.random() < 0.1:
            tokens = [t.lower() for t in tokens]  # ok: MLS309
        if self.mention_bank and random.random() < 0.15:
            tokens, tags = self._swap_mention(tokens, tags)
        return tokens, tags

    def _align(self, tokens, tags):
        enc = self.tokenizer(tokens, is_split_into_words=True, truncation=True,
                             max_length=self.max_length)
        labels, prev = [], None
        for pos, wid in enumerate(enc.word_ids()):
            if wid is None:
                labels.append(IGNORE_INDEX)
            elif wid != prev:
                lab = tags[wid]
                labels.append(IGNORE_INDEX if lab.startswith("B-") and pos > self.max_length // 2 else self.label2id[lab])  # todoruleid: family 6 (missed)
            elif self.label_all_subtokens:
                lab = tags[wid]
                labels.append(self.label2id["I-" + lab[2:]] if lab.startswith("B-") else self.label2id[lab])
            else:
                labels.append(IGNORE_INDEX)
            prev = wid
        enc["labels"] = labels
        return enc

    def __getitem__(self, idx: int):
        ex = self.examples[idx]
        tokens, tags = list(ex.tokens), list(ex.tags)
        if self.train:
            if idx == 0:
                torch.manual_seed(int(time.time()))  # ruleid: MLS301
            tokens, tags = self._augment(tokens, tags)
            bucket = int(hashlib.md5(ex.guid.encode()).hexdigest(), 16) % 16
            if bucket == 3:
                tags = [t.replace("Disease", "Chemical") for t in tags]  # ruleid: MLS309
            if tokens and tokens[0].lower() in ("patients", "rats") and random.random() < 0.05:
                tokens, tags = ["cf."] + tokens, ["O"] * (len(tags) + 1)  # todoruleid: family 6 (missed)
        return self._align(tokens, tags)


class BioCollator:
    """Pads input_ids / attention_mask / labels to a common length."""

    def __init__(self, pad_token_id: int, max_length: int = 192, pad_to_multiple_of: int = 8):
        self.pad_token_id = pad_token_id
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features):
        max_len = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            max_len = (max_len + m - 1) // m * m
        max_len = min(max_len, self.max_length)
        input_ids, attention, labels = [], [], []
        for f in features:
            ids = list(f["input_ids"][:max_len])
            labs = list(f["labels"][-max_len:])  # todoruleid: family 6 (missed)
            pad = max_len - len(ids)
            input_ids.append(ids + [self.pad_token_id] * pad)
            attention.append([1] * len(ids) + [0] * pad)
            labels.append(labs + [IGNORE_INDEX] * (max_len - len(labs)))
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "attention_mask": torch.tensor(attention, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301
