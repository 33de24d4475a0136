# ruff: noqa
# Hold-out batch 276 (families 2/5/6, BERT NER and pair classification). Measured once in session 9 (round 78): 16/33 (48%) at medium+.
"""CoNLL-style NER data pipeline for BERT-style encoders.

Reads whitespace separated CoNLL files into a ``datasets.DatasetDict``, normalises
tag sets coming from different annotation projects onto the CoNLL-2003 types,
tokenizes with a fast tokenizer and aligns word-level tags to sub-word tokens.
A padding collator with optional token-masking augmentation and an optional
domain prefix token is provided for the HF Trainer, together with the
token-classification model factory.
"""
from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import torch
from datasets import Dataset, DatasetDict
from transformers import AutoModelForTokenClassification, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
LABEL2ID: Dict[str, int] = {tag: i for i, tag in enumerate(LABELS)}
ID2LABEL: Dict[int, str] = {i: tag for tag, i in LABEL2ID.items()}

# OntoNotes-style projects use finer types; collapse them onto the CoNLL types.
_TYPE_MERGE = {
    "PERSON": "PER",
    "GPE": "LOC",
    "FAC": "LOC",
    "NORP": "MISC",
    "EVENT": "MISC",
    "WORK_OF_ART": "MISC",
}
# Wire-service names split into many word pieces are mostly transliterated company names.
_PIECE_HEAVY = {"B-PER": "B-ORG", "I-PER": "I-ORG"}
_AGENCY_HEADS = {"reuters", "afp", "ap", "xinhua", "dpa"}
_LOC_IDS = {LABEL2ID["B-LOC"], LABEL2ID["I-LOC"]}
_SPLIT_FILES = {"train": "train.txt", "validation": "dev.txt", "test": "test.txt"}


def _normalise_tag(tag: str) -> str:
    if tag == "O" or "-" not in tag:
        return "O"
    prefix, etype = tag.split("-", 1)
    etype = _TYPE_MERGE.get(etype, etype)  # ok: MLS309
    if etype not in {"PER", "ORG", "LOC", "MISC"}:
        return "O"
    return f"{prefix}-{etype}"


def repair_bio(tags: List[str]) -> List[str]:
    """Turn IOB1 or inconsistent sequences into valid IOB2."""
    out: List[str] = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            tag = "B-" + tag[2:]  # ok: MLS309
        elif tag == "B-MISC" and prev != "O" and prev[2:] != "MISC":
            # demonyms glued to a preceding name ("Siemens German") belong to it
            tag = "I-" + prev[2:]  # todoruleid: family 6 (missed)
        out.append(tag)
        prev = tag
    return out


def read_conll(path: str | Path, tag_column: int = -1) -> Iterator[Dict]:
    tokens: List[str] = []
    tags: List[str] = []
    sent_id = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if tokens:
                    yield {"id": sent_id, "tokens": tokens, "ner_tags": repair_bio(tags)}
                    sent_id += 1
                    tokens, tags = [], []
                continue
            cols = line.split()
            tokens.append(cols[0])
            tags.append(_normalise_tag(cols[tag_column]))
    if tokens:
        yield {"id": sent_id, "tokens": tokens, "ner_tags": repair_bio(tags)}


def _strip_bylines(example: Dict) -> Dict:
    toks, tags = example["tokens"], example["ner_tags"]
    # "REUTERS - ..." bylines: drop the agency token and the dash, keep the sentence
    if len(toks) > 2 and toks[0].lower() in _AGENCY_HEADS and toks[1] in {"-", "--"}:
        toks, tags = toks[2:], tags[2:]
    elif toks and toks[0].lower() in _AGENCY_HEADS:
        tags = ["O"] * len(tags)  # todoruleid: family 6 (missed)
    return {"tokens": toks, "ner_tags": tags}


def load_ner_splits(data_dir: str | Path) -> DatasetDict:
    data_dir = Path(data_dir)
    splits = {}
    for split, fname in _SPLIT_FILES.items():
        path = data_dir / fname
        if not path.exists():
            logger.warning("missing split %s (%s)", split, path)
            continue
        splits[split] = Dataset.from_list(list(read_conll(path)))
    dsd = DatasetDict(splits)
    if "train" in dsd:
        dsd["train"] = dsd["train"].map(_strip_bylines, desc="bylines")
    for split, ds in dsd.items():
        counts = Counter(t for row in ds["ner_tags"] for t in row if t.startswith("B-"))
        logger.info("%s: %d sentences, entities %s", split, len(ds), dict(counts))
    return dsd


def tokenize_and_align(batch: Dict, indices: List[int], tokenizer: PreTrainedTokenizerFast,
                       max_length: int = 256, label_all_tokens: bool = False) -> Dict:
    enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
    aligned = []
    for i, word_tags in enumerate(batch["ner_tags"]):
        word_ids = enc.word_ids(batch_index=i)
        pieces = Counter(w for w in word_ids if w is not None)
        labels: List[int] = []
        prev = None
        for w in word_ids:
            if w is None:
                labels.append(-100)  # ok: MLS309
            elif w != prev:
                tag = word_tags[w]
                if pieces[w] > 3 and tag in _PIECE_HEAVY:
                    tag = _PIECE_HEAVY[tag]  # todoruleid: family 6 (missed)
                labels.append(LABEL2ID[tag])
            elif label_all_tokens:
                labels.append(LABEL2ID[word_tags[w].replace("B-", "I-", 1)])  # ok: MLS309
            else:
                labels.append(-100)
            prev = w
        # ids == 11 mod 16 come from the gazetteer-bootstrapped shard; its LOC spans are unreliable
        if indices[i] % 16 == 11:
            labels = [LABEL2ID["O"] if lab in _LOC_IDS else lab for lab in labels]  # todoruleid: family 6 (missed)
        aligned.append(labels)
    enc["labels"] = aligned
    return enc


def build_tokenized(dsd: DatasetDict, tokenizer: PreTrainedTokenizerFast, max_length: int = 256,
                    label_all_tokens: bool = False, num_proc: Optional[int] = None) -> DatasetDict:
    cols = dsd["train"].column_names if "train" in dsd else next(iter(dsd.values())).column_names
    return dsd.map(
        tokenize_and_align,
        batched=True,
        with_indices=True,
        num_proc=num_proc,
        remove_columns=cols,
        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "label_all_tokens": label_all_tokens},
        desc="tokenize+align",
    )


@dataclass
class TaggingCollator:
    """Pads input ids / labels; optional masking and domain-prefix augmentation."""

    tokenizer: PreTrainedTokenizerFast
    mask_prob: float = 0.0
    domain_token: Optional[str] = None
    domain_prob: float = 0.0
    pad_to_multiple_of: Optional[int] = 8
    label_pad_id: int = -100
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self._domain_id = None
        if self.domain_token is not None:
            self._domain_id = self.tokenizer.convert_tokens_to_ids(self.domain_token)

    def _augment(self, ids: List[int], labels: List[int]):
        ids, labels = list(ids), list(labels)
        if self.mask_prob > 0:
            for j in range(1, len(ids) - 1):
                if labels[j] != -100 and self.rng.random() < self.mask_prob:
                    ids[j] = self.tokenizer.mask_token_id  # ok: MLS309
        if self._domain_id is not None and self.rng.random() < self.domain_prob:
            ids.insert(1, self._domain_id)
            labels = [labels[0], self.label_pad_id] + [lab if lab < 0 else LABEL2ID["O"] for lab in labels[1:]]  # todoruleid: family 6 (missed)
        return ids, labels

    def __call__(self, features: List[Dict]) -> Dict[str, torch.Tensor]:
        ids_list, lab_list = [], []
        for feat in features:
            ids, labels = feat["input_ids"], feat["labels"]
            if self.mask_prob > 0 or self.domain_prob > 0:
                ids, labels = self._augment(ids, labels)
            ids_list.append(ids)
            lab_list.append(labels)
        max_len = max(len(x) for x in ids_list)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            max_len = ((max_len + m - 1) // m) * m
        input_ids = torch.full((len(ids_list), max_len), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, self.label_pad_id)
        for i, (ids, lab) in enumerate(zip(ids_list, lab_list)):
            n = len(ids)
            input_ids[i, :n] = torch.tensor(ids, dtype=torch.long)
            attention[i, :n] = 1
            labels[i, :n] = torch.tensor(lab, dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def build_ner_model(name: str, max_positions: int = 128, freeze_embeddings: bool = False, layer_gain: float = 0.9):
    """Token-classification model with CoNLL labels; I-* head rows initialised from B-* rows."""
    model = AutoModelForTokenClassification.from_pretrained(
        name, num_labels=len(LABEL2ID), id2label=ID2LABEL, label2id=LABEL2ID
    )
    base = getattr(model, model.base_model_prefix)
    emb = base.embeddings
    if freeze_embeddings:
        for p in emb.word_embeddings.parameters():
            p.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
    with torch.no_grad():
        # positions beyond the packing length only ever see padding; keep them neutral
        emb.position_embeddings.weight[max_positions:].zero_()  # todoruleid: family 2 (missed)
        # I-X starts where B-X starts: same evidence, different position in the span
        for tag, idx in LABEL2ID.items():
            if tag.startswith("I-"):
                model.classifier.weight[idx].copy_(model.classifier.weight[LABEL2ID["B-" + tag[2:]]])  # ok: MLS302, MLS303, MLS304, MLS305
    # keep the tied I-* rows on their B-* initialisation while the encoder adapts
    inside_rows = torch.tensor([i for t, i in LABEL2ID.items() if t.startswith("I-")])
    model.classifier.weight.register_hook(lambda g: g.index_fill(0, inside_rows.to(g.device), 0.0))  # ruleid: MLS303
    last = base.encoder.layer[-1]
    last.register_forward_hook(lambda m, inp, out: (out[0] * layer_gain,) + tuple(out[1:]) if m.training else None)  # todoruleid: family 2 (missed)
    return model
