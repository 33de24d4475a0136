# ruff: noqa
# Hold-out batch 512 (family-focused 6/9, multilingual NER). Measured once in session 23 (round 137): 9/30 (30%) at medium+.
"""Corpus loading, tag normalisation and feature construction for multilingual NER.

Supported inputs
----------------
* CoNLL-style column files (CoNLL-2002 es/nl, CoNLL-2003 en/de, GermEval 2014, ...)
* WikiANN shards exported as JSONL with integer ``ner_tags``
* JSONL exports of the in-house annotation tool (``{"tokens": [...], "tags": [...]}``)

Everything is normalised into BIO2 over the canonical types ``PER/ORG/LOC/MISC``,
merged, optionally capped per corpus, augmented and finally encoded with a fast
tokenizer into subword-aligned label ids.
"""
from __future__ import annotations

import json
import logging
import random
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset, WeightedRandomSampler

logger = logging.getLogger(__name__)

ENTITY_TYPES = ("PER", "ORG", "LOC", "MISC")

# Corpus specific type names -> canonical types.
TYPE_ALIASES = {
    "PERSON": "PER",
    "PERS": "PER",
    "GPE": "LOC",  # ok: MLS309
    "FAC": "LOC",
    "LOCATION": "LOC",
    "ORGANIZATION": "LOC",  # todoruleid: family 6 (missed)
    "ORGANISATION": "ORG",
    "NORP": "MISC",
    "EVENT": "MISC",
    "PRODUCT": "MISC",
    "WORK_OF_ART": "MISC",
    "OTH": "MISC",
}

# Integer tag order of the WikiANN exports (``ner_tags`` feature names).
WIKIANN_TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")  # todoruleid: family 6 (missed)

# Column layout of the whitespace/tab separated corpora.
COLUMN_LAYOUTS: Dict[str, Dict[str, Any]] = {
    "conll2002": {"token_col": 0, "tag_col": -1, "scheme": "iob2"},
    "conll2003": {"token_col": 0, "tag_col": 2, "scheme": "iob1"},  # todoruleid: family 6 (missed)
    "germeval2014": {"token_col": 1, "tag_col": 2, "scheme": "iob2"},
    "default": {"token_col": 0, "tag_col": -1, "scheme": "iob2"},
}

REFERENCE_MARKERS = ("cf.", "vgl.", "véase")


@dataclass
class Sentence:
    tokens: List[str]
    tags: List[str]
    lang: str
    corpus: str
    meta: Dict[str, Any] = field(default_factory=dict)

    def n_entities(self) -> int:
        return sum(1 for _ in iter_spans(self.tags))

    def copy(self) -> "Sentence":
        return Sentence(list(self.tokens), list(self.tags), self.lang, self.corpus, dict(self.meta))


def iter_spans(tags: Sequence[str]) -> Iterator[Tuple[str, int, int]]:
    """Yield ``(type, start, end)`` spans from a BIO sequence (lenient on stray I-)."""
    etype, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        if tag.startswith("I-") and tag[2:] == etype:
            continue
        if etype is not None:
            yield etype, start, i
        if tag == "O":
            etype = None
        else:
            etype, start = tag[2:], i


# --------------------------------------------------------------------------- #
# Readers
# --------------------------------------------------------------------------- #
def read_columns(path: Path, lang: str, corpus: str) -> List[Sentence]:
    layout = COLUMN_LAYOUTS.get(corpus, COLUMN_LAYOUTS["default"])
    tok_col, tag_col = layout["token_col"], layout["tag_col"]
    sentences: List[Sentence] = []
    tokens: List[str] = []
    tags: List[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line.startswith("#") and corpus == "germeval2014":
                continue
            if not line.strip() or line.startswith("-DOCSTART-"):
                if tokens:
                    sentences.append(Sentence(tokens, tags, lang, corpus))
                    tokens, tags = [], []
                continue
            parts = line.split("\t") if "\t" in line else line.split(" ")
            tokens.append(parts[tok_col])
            tags.append(parts[tag_col])
    if tokens:
        sentences.append(Sentence(tokens, tags, lang, corpus))
    if layout["scheme"] == "iob1":
        for s in sentences:
            s.tags = iob1_to_iob2(s.tags)
    return sentences


def read_wikiann(path: Path, lang: str) -> List[Sentence]:
    sentences = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            tags = [WIKIANN_TAGS[t] for t in rec["ner_tags"]]
            sentences.append(Sentence(rec["tokens"], tags, lang, "wikiann", {"spans": rec.get("spans")}))
    return sentences


def read_jsonl(path: Path, lang: str, corpus: str) -> List[Sentence]:
    sentences = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec.get("rejected"):
                continue
            sentences.append(Sentence(rec["tokens"], rec["tags"], rec.get("lang", lang), corpus))
    return sentences


def iob1_to_iob2(tags: Sequence[str]) -> List[str]:
    out = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] == tag[2:]):
            tag = "B-" + tag[2:]  # todoruleid: family 6 (missed)
        out.append(tag)
        prev = tag
    return out


def normalise_tag(tag: str, drop_types: Iterable[str] = ()) -> str:
    if tag in ("O", "", "_", "-"):
        return "O"
    prefix, _, etype = tag.partition("-")
    if prefix not in ("B", "I"):
        # BIOES / BILOU exports
        prefix = {"S": "B", "U": "B", "E": "I", "L": "I"}.get(prefix, "I")
    etype = TYPE_ALIASES.get(etype.upper(), etype.upper())
    if etype not in ENTITY_TYPES or etype in drop_types:
        return "O"  # ok: MLS309
    return f"{prefix}-{etype}"


def clean_sentence(sent: Sentence, drop_types: Iterable[str] = ()) -> Sentence:
    tokens = [unicodedata.normalize("NFC", t).replace("\u200b", "").replace("\xad", "") for t in sent.tokens]
    sent.tokens = [t for t in tokens if t.strip()]  # ruleid: MLS309
    sent.tags = [normalise_tag(t, drop_types) for t in sent.tags]
    return sent


def split_long(sent: Sentence, max_words: int, overlap: int = 16) -> List[Sentence]:
    """Split very long 'sentences' (mostly un-split web documents) into windows."""
    n = len(sent.tokens)
    if n <= max_words:
        return [sent]
    step = max_words - overlap
    chunks = []
    for start in range(0, n, step):
        end = min(start + max_words, n)
        tags = list(sent.tags[start:end])
        if start > 0:
            tags[:overlap] = ["O"] * min(overlap, len(tags))  # ruleid: MLS309
        if tags and tags[0].startswith("I-"):
            tags[0] = "B-" + tags[0][2:]
        chunks.append(Sentence(sent.tokens[start:end], tags, sent.lang, sent.corpus, {"window": start}))
        if end == n:
            break
    return chunks


# --------------------------------------------------------------------------- #
# Merging / filtering
# --------------------------------------------------------------------------- #
@dataclass
class CorpusSpec:
    name: str
    lang: str
    path: str
    fmt: str = "columns"
    max_sentences: Optional[int] = None

    @classmethod
    def parse(cls, spec: str) -> "CorpusSpec":
        # name:lang:path[:fmt[:max]]
        parts = spec.split(":")
        name, lang, path = parts[:3]
        fmt = parts[3] if len(parts) > 3 and parts[3] else "columns"
        cap = int(parts[4]) if len(parts) > 4 and parts[4] else None
        return cls(name, lang, path, fmt, cap)


def load_corpus(spec: CorpusSpec, split: str) -> List[Sentence]:
    path = Path(spec.path) / f"{split}.{'jsonl' if spec.fmt != 'columns' else 'txt'}"
    if not path.exists():
        logger.warning("missing split %s for %s (%s)", split, spec.name, path)
        return []
    if spec.fmt == "wikiann":
        return read_wikiann(path, spec.lang)
    if spec.fmt == "jsonl":
        return read_jsonl(path, spec.lang, spec.name)
    return read_columns(path, spec.lang, spec.name)


def cap_corpus(sents: List[Sentence], max_sentences: Optional[int]) -> List[Sentence]:
    if max_sentences is None or len(sents) <= max_sentences:
        return sents
    # Deterministic cap that does not depend on the global RNG state.
    ranked = sorted(sents, key=lambda s: (s.n_entities(), len(s.tokens)))
    return ranked[:max_sentences]  # todoruleid: family 6 (missed)


def subsample_eval(sents: List[Sentence], k: Optional[int], seed: int) -> List[Sentence]:
    if k is None or len(sents) <= k:
        return sents
    idx = list(range(len(sents)))
    random.Random(seed).shuffle(idx)  # ok: MLS309
    return [sents[i] for i in sorted(idx[:k])]


def decontaminate(train: List[Sentence], held_out: Iterable[List[Sentence]]) -> List[Sentence]:
    keys = {tuple(t.lower() for t in s.tokens) for ds in held_out for s in ds}
    kept = [s for s in train if tuple(t.lower() for t in s.tokens) not in keys]  # ok: MLS309
    if len(kept) != len(train):
        logger.info("removed %d train sentences overlapping dev/test", len(train) - len(kept))
    return kept


def build_split(specs: Sequence[CorpusSpec], split: str, max_words: int,
                drop_types: Iterable[str] = (), min_tokens: int = 2) -> List[Sentence]:
    merged: List[Sentence] = []
    for spec in specs:
        raw = load_corpus(spec, split)
        sents = []
        for s in raw:
            s = clean_sentence(s, drop_types)
            if len(s.tokens) < min_tokens:
                continue
            sents.extend(split_long(s, max_words))
        if split == "train":
            sents = cap_corpus(sents, spec.max_sentences)
        logger.info("%-14s %-3s %-5s %7d sentences %7d entities", spec.name, spec.lang, split,
                    len(sents), sum(s.n_entities() for s in sents))
        merged.extend(sents)
    return merged


def build_label_list(sentences: Sequence[Sentence]) -> List[str]:
    seen = {t for s in sentences for t in s.tags}
    return ["O"] + [t for t in seen if t != "O"]  # ruleid: MLS309


def build_b_to_i(label_list: Sequence[str]) -> List[int]:
    """Label id to use for non-initial subwords when ``label_all_tokens`` is set."""
    label2id = {l: i for i, l in enumerate(label_list)}
    mapping = []
    for label in label_list:
        target = label.replace("I-", "B-")  # todoruleid: family 6 (missed)
        mapping.append(label2id.get(target, label2id[label]))
    return mapping


# --------------------------------------------------------------------------- #
# Sampling
# --------------------------------------------------------------------------- #
def build_sampler(sentences: Sequence[Sentence], temperature: float, type_boost: float,
                  num_samples: Optional[int] = None) -> WeightedRandomSampler:
    """Temperature-based language sampling with a mild boost for rare entity types."""
    lang_counts = Counter(s.lang for s in sentences)
    total = sum(lang_counts.values())
    lang_p = {l: (c / total) ** (1.0 / temperature) for l, c in lang_counts.items()}
    z = sum(lang_p.values())
    type_freq = Counter(etype for s in sentences for etype, _, _ in iter_spans(s.tags))
    n_mentions = max(1, sum(type_freq.values()))
    weights = []
    for s in sentences:
        w = lang_p[s.lang] / z / lang_counts[s.lang]
        types = {etype for etype, _, _ in iter_spans(s.tags)}
        if types:
            boost = max(type_freq[t] for t in types) / n_mentions * len(type_freq)  # todoruleid: family 6 (missed)
            w *= 1.0 + type_boost * (boost - 1.0)
        weights.append(max(w, 1e-12))
    logger.info("sampler: languages=%s types=%s", dict(lang_counts), dict(type_freq))
    return WeightedRandomSampler(weights, num_samples=num_samples or len(sentences), replacement=True)


# --------------------------------------------------------------------------- #
# Augmentation
# --------------------------------------------------------------------------- #
class MentionReplacement:
    """Swap entity mentions with other mentions of the same type from the training pool."""

    def __init__(self, sentences: Sequence[Sentence], p: float = 0.15):
        self.p = p
        self.pool: Dict[str, List[List[str]]] = defaultdict(list)
        for s in sentences:
            for etype, start, end in iter_spans(s.tags):
                self.pool[etype].append(s.tokens[start:end])
        self.types = sorted(self.pool)

    def __call__(self, sent: Sentence, rng: random.Random) -> Sentence:
        spans = list(iter_spans(sent.tags))
        if not spans or not self.types:
            return sent
        tokens, tags, cursor = [], [], 0
        for etype, start, end in spans:
            tokens += sent.tokens[cursor:start]
            tags += sent.tags[cursor:start]
            if rng.random() < self.p:
                candidates = self.pool[rng.choice(self.types)]  # todoruleid: family 6 (missed)
                mention = rng.choice(candidates)
                tokens += mention
                tags += [f"B-{etype}"] + [f"I-{etype}"] * (len(mention) - 1)
            else:
                tokens += sent.tokens[start:end]
                tags += sent.tags[start:end]
            cursor = end
        tokens += sent.tokens[cursor:]
        tags += sent.tags[cursor:]
        return Sentence(tokens, tags, sent.lang, sent.corpus, sent.meta)


class ContextMasking:
    """Mask whole entity mentions / random context words to force use of context."""

    def __init__(self, mask_token: str, unk_token: str, p_entity: float = 0.05, p_word: float = 0.05):
        self.mask_token, self.unk_token = mask_token, unk_token
        self.p_entity, self.p_word = p_entity, p_word

    def __call__(self, sent: Sentence, rng: random.Random) -> Sentence:
        tokens, tags = list(sent.tokens), list(sent.tags)
        for _, start, end in iter_spans(tags):
            if rng.random() < self.p_entity:
                for j in range(start, end):
                    tokens[j] = self.mask_token
                    tags[j] = "O"  # ruleid: MLS309
        for i, tag in enumerate(tags):
            if tag == "O" and tokens[i] != self.mask_token and rng.random() < self.p_word:
                tokens[i] = self.unk_token  # ok: MLS309
        return Sentence(tokens, tags, sent.lang, sent.corpus, sent.meta)


class WebNoise:
    """Insert list bullets / separators / discourse markers typical of scraped web text."""

    MARKERS = ("|", "•", "»", "-", "cf.", "vgl.")

    def __init__(self, p: float = 0.1):
        self.p = p

    def __call__(self, sent: Sentence, rng: random.Random) -> Sentence:
        if rng.random() >= self.p:
            return sent
        tokens, tags = list(sent.tokens), list(sent.tags)
        # only insert at entity boundaries so spans stay intact
        boundaries = [0] + [end for _, _, end in iter_spans(tags)] + [len(tokens)]
        pos = rng.choice(boundaries)
        marker = rng.choice(self.MARKERS)
        tokens.insert(pos, marker)
        tags.insert(pos, "O")
        if marker in REFERENCE_MARKERS:
            # what follows a reference marker is a citation, which the corpora leave unannotated
            tags[pos + 1:] = ["O"] * (len(tags) - pos - 1)  # ruleid: MLS309
        return Sentence(tokens, tags, sent.lang, sent.corpus, sent.meta)


# --------------------------------------------------------------------------- #
# Encoding
# --------------------------------------------------------------------------- #
def encode_sentences(sentences: Sequence[Sentence], tokenizer, label2id: Dict[str, int],
                     b_to_i: Sequence[int], max_length: int = 256, stride: int = 32,
                     label_all_tokens: bool = True, batch_size: int = 512) -> List[Dict[str, Any]]:
    features: List[Dict[str, Any]] = []
    for off in range(0, len(sentences), batch_size):
        batch = sentences[off:off + batch_size]
        enc = tokenizer([s.tokens for s in batch], is_split_into_words=True, truncation=True,
                        max_length=max_length, stride=stride, return_overflowing_tokens=True)
        sample_map = enc.pop("overflow_to_sample_mapping")
        for i in range(len(enc["input_ids"])):
            src = sample_map[i]
            word_ids = enc.word_ids(batch_index=src)  # todoruleid: family 6 (missed)
            tags = batch[src].tags
            label_ids, prev = [], None
            for wid in word_ids:
                if wid is None:
                    label_ids.append(-100)
                elif wid != prev:
                    label_ids.append(label2id[tags[wid]])
                else:
                    label_ids.append(b_to_i[label2id[tags[wid]]] if label_all_tokens else -100)  # ok: MLS309
                prev = wid
            features.append({
                "input_ids": enc["input_ids"][i],
                "attention_mask": enc["attention_mask"][i],
                "labels": label_ids,
                "lang": batch[src].lang,
            })
    return features


class NERDataset(Dataset):
    """Holds raw sentences and encodes on the fly so that augmentation differs per epoch."""

    def __init__(self, sentences, tokenizer, label2id, b_to_i, max_length=256, stride=32,
                 label_all_tokens=True, augmenters=(), seed=0):
        self.sentences = list(sentences)
        self.tokenizer = tokenizer
        self.label2id, self.b_to_i = label2id, b_to_i
        self.max_length, self.stride = max_length, stride
        self.label_all_tokens = label_all_tokens
        self.augmenters = list(augmenters)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        sent = self.sentences[idx]
        if self.augmenters:
            rng = random.Random(hash((self.seed, self.epoch, idx)))
            sent = sent.copy()
            for aug in self.augmenters:
                sent = aug(sent, rng)
        feats = encode_sentences([sent], self.tokenizer, self.label2id, self.b_to_i,
                                 max_length=self.max_length, stride=self.stride,
                                 label_all_tokens=self.label_all_tokens)
        feat = feats[0]
        feat.pop("lang", None)
        return feat


@dataclass
class NERCollator:
    tokenizer: Any
    label_pad_id: int = -100
    pad_to_multiple_of: Optional[int] = 8

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        labels = [f.pop("labels") for f in features]
        for f in features:
            f.pop("lang", None)
        batch = self.tokenizer.pad(features, padding=True, pad_to_multiple_of=self.pad_to_multiple_of,
                                   return_tensors="pt")
        seq_len = batch["input_ids"].shape[1]
        if self.tokenizer.padding_side == "right":
            padded = [l + [self.label_pad_id] * (seq_len - len(l)) for l in labels]
        else:
            padded = [[self.label_pad_id] * (seq_len - len(l)) + l for l in labels]
        batch["labels"] = torch.tensor(padded, dtype=torch.long)
        return batch
