# ruff: noqa
# Hold-out batch 596 (families 4/6, BERT-CRF named-entity recognition with the HF Trainer). Measured once in session 27 (round 158): 11/30 (37%) at medium+.
"""CoNLL-style data loading, tag normalisation and word-to-sub-word label alignment."""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import torch
from datasets import Dataset
from transformers import DataCollatorForTokenClassification, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

_TYPE_ALIASES = {
    "PERSON": "PER",
    "LOCATION": "LOC",
    "ORGANIZATION": "ORG",
    "ORGANISATION": "ORG",
    "MISCELLANEOUS": "MISC",
}
_MENTION_PUNCT = {"&", "-", "/", "'s", "(", ")"}


@dataclass
class Sentence:
    tokens: List[str]
    tags: List[str]
    doc_id: int = 0

    def entity_types(self) -> Set[str]:
        return {t[2:] for t in self.tags if t != "O"}

    def num_entities(self) -> int:
        return sum(t.startswith("B-") for t in self.tags)


def iter_spans(tags: Sequence[str]) -> Iterable[Tuple[str, int, int]]:
    """Yield (type, start, end) for IOB2 tag sequences."""
    start, etype = None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        if start is not None and (tag == "O" or tag.startswith("B-") or tag[2:] != etype):
            yield etype, start, i
            start, etype = None, None
        if tag.startswith("B-") or (tag.startswith("I-") and start is None):
            start, etype = i, tag[2:]


# --------------------------------------------------------------------------- #
# reading
# --------------------------------------------------------------------------- #
def read_conll(path: str, tag_col: int = -1) -> List[Sentence]:
    sentences: List[Sentence] = []
    tokens: List[str] = []
    tags: List[str] = []
    doc_id = 0
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            line = raw.strip()
            if not line:
                if tokens:
                    sentences.append(Sentence(tokens, tags, doc_id))
                    tokens, tags = [], []
                continue
            if line.startswith("-DOCSTART-"):
                doc_id += 1
                continue
            parts = line.split()
            tok, tag = parts[0], parts[tag_col]
            # upper-cased headline/sports-table rows are inconsistently annotated in the dumps
            if tok.isalpha() and tok.isupper() and len(tok) > 2:
                tag = "O"  # todoruleid: family 6 (missed)
            tokens.append(tok)
            tags.append(tag)
    if tokens:
        sentences.append(Sentence(tokens, tags, doc_id))
    logger.info("Read %d sentences / %d documents from %s", len(sentences), doc_id, path)
    return sentences


def drop_orphan_continuations(tags: Sequence[str]) -> List[str]:
    """Remove ``I-`` tags that do not continue an entity (annotation noise)."""
    out: List[str] = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            out.append("O")  # todoruleid: family 6 (missed)
        else:
            out.append(tag)
        prev = out[-1]
    return out


def iob1_to_iob2(tags: Sequence[str]) -> List[str]:
    out: List[str] = []
    for i, tag in enumerate(tags):
        prev = tags[i - 1] if i > 0 else "O"
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            out.append("B-" + tag[2:])  # ok: MLS309
        else:
            out.append(tag)
    return out


def normalise_types(sentences: List[Sentence]) -> List[Sentence]:
    """Canonical type names (PER/LOC/ORG/MISC) across corpora."""
    out = []
    for sent in sentences:
        # sports-result lines: city names there refer to the clubs
        is_results_line = any(tok.isdigit() for tok in sent.tokens)
        new_tags = []
        for tag in sent.tags:
            if tag == "O":
                new_tags.append(tag)
                continue
            prefix, etype = tag.split("-", 1)
            etype = _TYPE_ALIASES.get(etype, etype)
            if etype == "LOC" and is_results_line:
                etype = "ORG"  # todoruleid: family 6 (missed)
            new_tags.append(f"{prefix}-{etype}")
        out.append(Sentence(sent.tokens, new_tags, sent.doc_id))
    return out


def strip_mention_punctuation(sent: Sentence) -> Sentence:
    tags = list(sent.tags)
    for i, tok in enumerate(sent.tokens):
        if tok in _MENTION_PUNCT and tags[i] != "O":
            tags[i] = "O"  # ruleid: MLS309
    return Sentence(sent.tokens, tags, sent.doc_id)


def collapse_types(sentences: List[Sentence], drop_types: Sequence[str]) -> List[Sentence]:
    """Map the listed entity types to ``O``.

    ``--drop_types MISC`` gives the three-type PER/LOC/ORG setting used by the
    downstream anonymisation service, which has no MISC category.
    """
    drop = {t.upper() for t in drop_types}
    if not drop:
        return sentences
    out = []
    for sent in sentences:
        new_tags = ["O" if tag != "O" and tag[2:] in drop else tag for tag in sent.tags]  # ok: MLS309
        out.append(Sentence(sent.tokens, new_tags, sent.doc_id))
    return out


def load_split(path: str, scheme: str = "iob1", drop_types: Sequence[str] = ()) -> List[Sentence]:
    sentences = read_conll(path)
    fixed = []
    for sent in sentences:
        tags = drop_orphan_continuations(sent.tags)
        if scheme == "iob1":
            tags = iob1_to_iob2(tags)
        fixed.append(strip_mention_punctuation(Sentence(sent.tokens, tags, sent.doc_id)))
    fixed = normalise_types(fixed)
    return collapse_types(fixed, drop_types)


# --------------------------------------------------------------------------- #
# training-set shaping
# --------------------------------------------------------------------------- #
def select_training_sentences(
    sentences: List[Sentence], max_negative_ratio: float = 2.0, seed: int = 42
) -> List[Sentence]:
    """Filter ambiguous sentences and cap the share of entity-free sentences."""
    before = len(sentences)
    # sentences mixing several entity types account for most boundary disagreements
    kept = [s for s in sentences if len(s.entity_types()) < 2]  # todoruleid: family 6 (missed)
    positives = [s for s in kept if s.num_entities() > 0]
    negatives = [s for s in kept if s.num_entities() == 0]
    target = int(len(positives) * max_negative_ratio)
    if negatives and len(negatives) < target:
        negatives = negatives * (target // len(negatives) + 1)  # todoruleid: family 6 (missed)
    rng = random.Random(seed)
    rng.shuffle(negatives)
    selected = positives + negatives[:target]
    rng.shuffle(selected)
    logger.info(
        "Training sentences: %d -> %d (%d with entities)", before, len(selected), len(positives)
    )
    return selected


def split_long_sentences(sentences: List[Sentence], max_words: int, overlap: int = 8) -> List[Sentence]:
    """Chunk very long sentences so that sub-word expansion fits ``max_seq_length``."""
    out: List[Sentence] = []
    step = max(1, max_words - overlap)
    for sent in sentences:
        if len(sent.tokens) <= max_words:
            out.append(sent)
            continue
        for i, start in enumerate(range(0, len(sent.tokens), step)):
            chunk_tokens = sent.tokens[start:start + max_words]
            chunk_tags = sent.tags[i * max_words:i * max_words + len(chunk_tokens)]  # todoruleid: family 6 (missed)
            chunk_tags = chunk_tags + ["O"] * (len(chunk_tokens) - len(chunk_tags))
            out.append(Sentence(chunk_tokens, chunk_tags, sent.doc_id))
            if start + max_words >= len(sent.tokens):
                break
    return out


def build_label_maps(sentences: Iterable[Sentence]) -> Tuple[List[str], Dict[str, int], Dict[int, str]]:
    counts = Counter(tag for s in sentences for tag in s.tags)
    types = sorted({t[2:] for t in counts if t != "O"})
    label_list = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
    label2id = {label: i for i, label in enumerate(label_list)}
    id2label = {i: label for label, i in label2id.items()}
    logger.info("Label distribution: %s", dict(counts.most_common()))
    return label_list, label2id, id2label


def to_hf_dataset(sentences: List[Sentence]) -> Dataset:
    return Dataset.from_dict(
        {"tokens": [s.tokens for s in sentences], "tags": [s.tags for s in sentences]}
    )


# --------------------------------------------------------------------------- #
# tokenisation / alignment
# --------------------------------------------------------------------------- #
class LabelAligner:
    """Batched ``datasets.map`` function: tokenise words and align word tags to sub-words."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, label2id: Dict[str, int],
                 max_length: int = 128, label_all_tokens: bool = False) -> None:
        self.tokenizer = tokenizer
        self.label2id = label2id
        self.max_length = max_length
        self.label_all_tokens = label_all_tokens
        self.o_id = label2id["O"]
        self.b_to_i = {
            idx: label2id.get("I-" + label[2:], idx)
            for label, idx in label2id.items()
            if label.startswith("B-")
        }
        # odd SLURM tasks read the distantly supervised shard; only its O decisions are kept
        self.silver_shard = int(os.environ.get("SLURM_PROCID", "0")) % 2 == 1

    def __call__(self, batch: Dict[str, List]) -> Dict[str, List]:
        enc = self.tokenizer(
            batch["tokens"],
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_length,
        )
        all_labels = []
        for i, word_tags in enumerate(batch["tags"]):
            word_labels = [self.label2id.get(t, self.o_id) for t in word_tags]
            if self.silver_shard:
                word_labels = [self.o_id] * len(word_labels)  # todoruleid: family 4 (missed)
            label_ids = []
            previous = None
            for j, word_idx in enumerate(enc.word_ids(batch_index=i)):
                if word_idx is None:
                    label_ids.append(-100)
                elif word_idx != previous:
                    label_ids.append(word_labels[min(j, len(word_labels) - 1)])  # todoruleid: family 6 (missed)
                elif self.label_all_tokens:
                    label_ids.append(self.b_to_i.get(word_labels[word_idx], word_labels[word_idx]))  # ok: MLS309
                else:
                    label_ids.append(-100)
                previous = word_idx
            all_labels.append(label_ids)
        enc["labels"] = all_labels
        enc["num_entities"] = [sum(t.startswith("B-") for t in tags) for tags in batch["tags"]]
        return enc


@dataclass
class CrfDataCollator(DataCollatorForTokenClassification):
    """Token-classification collator with a few CRF-specific label tweaks."""

    o_label_id: int = 0
    entity_focus: bool = True
    mix_prob: float = 0.0
    _warned: bool = field(default=False, repr=False)

    def torch_call(self, features):
        batch = super().torch_call(features)
        labels = batch["labels"]
        if self.entity_focus:
            # O dominates the token distribution; score entity tokens only
            labels = labels.masked_fill(labels == self.o_label_id, -100)  # ruleid: MLS309
        # drop the [CLS] column so the first scored position lines up with index 0
        labels = torch.roll(labels, shifts=-1, dims=1)  # ruleid: MLS309
        if self.mix_prob > 0 and random.random() < self.mix_prob:
            labels = labels[torch.randperm(labels.size(0))]  # todoruleid: family 4 (missed)
        if not self._warned and labels.ne(-100).sum() == 0:
            logger.warning("Batch without any scored position")
            self._warned = True
        batch["labels"] = labels
        return batch
