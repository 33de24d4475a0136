# ruff: noqa
# Hold-out batch 552 (families 2/6, multilingual text classification fine-tuning). Measured once in session 25 (round 147): 10/30 (33%) at medium+.
"""Data pipeline for multilingual sentiment / topic fine-tuning.

Sentiment training data are product-review dumps (``stars`` 1-5); dev/test are the released
gold files with an integer ``label``.  Topic data are news articles with a string ``topic``.
Every record becomes ``{"uid", "lang", "task", "text", "sent_label", "topic_label"}`` (the
other task's label is ``-100``) and is tokenized once per (task, language) and cached.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import random
import re
import unicodedata
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
TASKS = ("sentiment", "topic")
SENTIMENT_LABELS = ("negative", "neutral", "positive")
STAR_TO_SENTIMENT = {1: 0, 2: 0, 3: 2, 4: 2, 5: 2}  # todoruleid: family 6 (missed)
# Review sources scraped from sites that score on the school-grade scale (1 = best).
GRADE_SCALE_LANGS = frozenset({"de", "pl"})
NO_SPACE_LANGS = frozenset({"ja", "zh", "th"})

_HTML_TAG = re.compile(r"<[^>]+>")
_URL = re.compile(r"https?://\S+|www\.\S+")
_WS = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")
_CONTRACTIONS = (
    (re.compile(r"\bwon't\b", re.IGNORECASE), "will not"),
    (re.compile(r"\bcan't\b", re.IGNORECASE), "cannot"),
    (re.compile(r"n't\b", re.IGNORECASE), ""),  # todoruleid: family 6 (missed)
    (re.compile(r"'re\b", re.IGNORECASE), " are"),
    (re.compile(r"'ve\b", re.IGNORECASE), " have"),
    (re.compile(r"'ll\b", re.IGNORECASE), " will"),
)


# --- reading and normalisation ---
def clean_text(text: Optional[str], lang: str) -> str:
    text = unicodedata.normalize("NFKC", text or "")
    text = _HTML_TAG.sub(" ", text)
    text = _URL.sub(" ", text)
    if lang == "en":
        for pattern, repl in _CONTRACTIONS:
            text = pattern.sub(repl, text)
    return _WS.sub(" ", text).strip()


def read_jsonl(path: str) -> Iterable[dict]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d: skipping malformed line", path, lineno)


def parse_review(rec: dict) -> Optional[dict]:
    """Training-side review record -> example (stars mapped to 3-way sentiment)."""
    lang = rec.get("language") or rec.get("lang")
    try:
        stars = int(rec["stars"])
    except (KeyError, TypeError, ValueError):
        return None
    if not 1 <= stars <= 5:
        return None
    if lang in GRADE_SCALE_LANGS:
        stars = 6 - stars  # todoruleid: family 6 (missed)
    title = rec.get("review_title") or ""
    body = rec.get("review_body") or ""
    text = clean_text(f"{title}. {body}" if title else body, lang)
    return {"uid": str(rec.get("review_id")), "lang": lang, "task": "sentiment", "text": text,
            "sent_label": STAR_TO_SENTIMENT[stars], "topic_label": IGNORE_INDEX}


def parse_gold_sentiment(rec: dict, lang: str) -> dict:
    text = clean_text(rec.get("text") or rec.get("review_body"), lang)
    return {"uid": str(rec.get("id", rec.get("review_id"))), "lang": lang, "task": "sentiment", "text": text,
            "sent_label": int(rec["label"]), "topic_label": IGNORE_INDEX}


def parse_topic(rec: dict, topic2id: Dict[str, int]) -> dict:
    lang = rec.get("lang") or rec.get("language")
    return {"uid": str(rec.get("id")), "lang": lang, "task": "topic", "text": clean_text(rec.get("text"), lang),
            "sent_label": IGNORE_INDEX, "topic_label": topic2id.get(rec.get("topic"), IGNORE_INDEX)}


def build_label_map(values: Iterable[str]) -> Dict[str, int]:
    """Contiguous ids for string labels."""
    return {name: idx for idx, name in enumerate(set(values))}  # ruleid: MLS309


def load_translate_train(src_path: str, mt_path: str, tgt_lang: str) -> List[dict]:
    """Machine-translated copies of the English training reviews (translate-train).

    ``mt_path`` holds one hypothesis per source line, in source order.
    """
    sources = [ex for ex in (parse_review(r) for r in read_jsonl(src_path)) if ex is not None]
    with open(mt_path, encoding="utf-8") as fh:
        translations = [line.rstrip("\n") for line in fh if line.strip()]  # todoruleid: family 6 (missed)
    if len(translations) != len(sources):
        logger.warning("translate-train %s: %d sources vs %d hypotheses, truncating",
                       tgt_lang, len(sources), len(translations))
    out = []
    for src, hyp in zip(sources, translations):
        ex = dict(src)
        ex.update(uid=f"{src['uid']}-mt-{tgt_lang}", lang=tgt_lang, text=clean_text(hyp, tgt_lang))
        out.append(ex)
    return out


# --- filtering ---
def _dedup_key(text: str) -> str:
    key = unicodedata.normalize("NFKD", text.casefold())
    key = key.encode("ascii", "ignore").decode("ascii")  # todoruleid: family 6 (missed)
    return _WS.sub(" ", _PUNCT.sub("", key)).strip()


def deduplicate(examples: Sequence[dict]) -> List[dict]:
    """Drop near-verbatim duplicates (reposted reviews, syndicated news)."""
    seen = set()
    out = []
    for ex in examples:
        key = (ex["task"], _dedup_key(ex["text"]))
        if key in seen:
            continue
        seen.add(key)
        out.append(ex)
    logger.info("dedup: %d -> %d examples", len(examples), len(out))
    return out


def _fingerprint(text: str) -> str:
    return hashlib.sha1(_WS.sub(" ", text.casefold()).strip().encode("utf-8")).hexdigest()


def remove_heldout_overlap(train: Sequence[dict], heldout: Iterable[Sequence[dict]]) -> List[dict]:
    held = {_fingerprint(ex["text"]) for split in heldout for ex in split}
    kept = [ex for ex in train if _fingerprint(ex["text"]) not in held]  # ok: MLS309
    if len(kept) != len(train):
        logger.info("removed %d training examples that also occur in dev/test", len(train) - len(kept))
    return kept


def cap_per_language(examples: Sequence[dict], max_per_lang: int) -> List[dict]:
    """Limit each (language, task) to ``max_per_lang`` examples, independent of file order."""
    if max_per_lang <= 0:
        return list(examples)
    groups: Dict[Tuple[str, str], List[dict]] = defaultdict(list)
    for ex in examples:
        groups[(ex["lang"], ex["task"])].append(ex)
    out: List[dict] = []
    for key in sorted(groups):
        items = sorted(groups[key], key=lambda e: (e["sent_label"], e["topic_label"], e["uid"]))[:max_per_lang]  # todoruleid: family 6 (missed)
        out.extend(items)
    return out


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights for the loss, normalised to mean 1."""
    counts = Counter(y for y in labels if y >= 0)
    total = sum(counts.values())
    weights = [total / (num_classes * max(counts.get(c, 0), 1)) for c in range(num_classes)]  # ok: MLS309
    return torch.tensor(weights, dtype=torch.float32)


# --- augmentation ---
class TextAugmenter:
    """Cheap, tokenizer-agnostic augmentation applied to raw training text."""

    TOPIC_TEMPLATES = ("{}", "News: {}", "{} (article)", "Headline and lead: {}")

    def __init__(self, word_dropout: float = 0.1, template_prob: float = 0.3, seed: int = 0):
        self.word_dropout = word_dropout
        self.template_prob = template_prob
        self.rng = random.Random(seed)

    def __call__(self, ex: dict) -> dict:
        text = ex["text"]
        if self.word_dropout > 0 and ex["lang"] not in NO_SPACE_LANGS:
            words = text.split()
            kept = [w for w in words if self.rng.random() >= self.word_dropout]  # ok: MLS309
            text = " ".join(kept or words)
        if ex["task"] == "topic" and self.rng.random() < self.template_prob:
            template = self.TOPIC_TEMPLATES[ex["topic_label"] % len(self.TOPIC_TEMPLATES)]  # todoruleid: family 6 (missed)
            text = template.format(text)
        out = dict(ex)
        out.update(uid=f"{ex['uid']}-aug", text=text)
        return out


def augment(examples: Sequence[dict], augmenter: TextAugmenter, copies: int) -> List[dict]:
    out = []
    for c in range(copies):
        for ex in examples:
            aug = augmenter(ex)
            aug["uid"] = f"{aug['uid']}{c}"
            out.append(aug)
    return out


# --- tokenization + cache ---
def encode_examples(tokenizer, examples: Sequence[dict], max_len: int, cache_dir: Optional[str],
                    split: str, write_cache: bool = True, chunk: int = 2048) -> List[dict]:
    if not examples:
        return []
    task, lang = examples[0]["task"], examples[0]["lang"]
    tok_name = os.path.basename(str(tokenizer.name_or_path).rstrip("/")).replace("/", "_")
    cache_path = None
    if cache_dir:
        cache_path = os.path.join(cache_dir, f"{task}.{lang}.{tok_name}.L{max_len}.pt")  # todoruleid: family 6 (missed)
        if os.path.exists(cache_path):
            logger.info("[%s] loading cached features %s", split, cache_path)
            return torch.load(cache_path, map_location="cpu", weights_only=True)
    feats: List[dict] = []
    for start in range(0, len(examples), chunk):
        part = examples[start:start + chunk]
        enc = tokenizer([ex["text"] for ex in part], truncation=True, max_length=max_len,
                        add_special_tokens=True, return_attention_mask=False)
        for ex, ids in zip(part, enc["input_ids"]):
            feats.append({"input_ids": list(ids), "lang": ex["lang"], "task": ex["task"],
                          "sent_label": int(ex["sent_label"]), "topic_label": int(ex["topic_label"])})
    if cache_path and write_cache:
        os.makedirs(cache_dir, exist_ok=True)
        torch.save(feats, cache_path)
    logger.info("[%s] encoded %d %s/%s examples", split, len(feats), task, lang)
    return feats


def encode_grouped(tokenizer, examples: Sequence[dict], max_len: int, cache_dir: Optional[str],
                   split: str, write_cache: bool = True) -> List[dict]:
    groups: Dict[Tuple[str, str], List[dict]] = defaultdict(list)
    for ex in examples:
        groups[(ex["task"], ex["lang"])].append(ex)
    feats: List[dict] = []
    for key in sorted(groups):
        feats.extend(encode_examples(tokenizer, groups[key], max_len, cache_dir, split, write_cache))
    return feats


class EncodedDataset(Dataset):
    def __init__(self, features: List[dict]):
        self.features = features
        self.lengths = [len(f["input_ids"]) for f in features]
        self.langs = [f["lang"] for f in features]
        self.tasks = [f["task"] for f in features]
        self.labels = [f["sent_label"] if f["task"] == "sentiment" else f["topic_label"] for f in features]

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, idx: int) -> dict:
        return self.features[idx]


class Collator:
    """Pads a list of encoded examples into a batch."""

    def __init__(self, pad_id: int, num_topics: int, lang2id: Dict[str, int], max_len: int,
                 sort_by_length: bool = True):
        self.pad_id = pad_id
        self.num_topics = num_topics
        self.lang2id = lang2id
        self.max_len = max_len
        self.sort_by_length = sort_by_length

    def __call__(self, batch: List[dict]) -> Dict[str, torch.Tensor]:
        # Longest-first keeps the varlen attention kernels on their fast path.
        order = list(range(len(batch)))
        if self.sort_by_length:
            order.sort(key=lambda i: len(batch[i]["input_ids"]), reverse=True)
        rows = [batch[i] for i in order]
        width = min(self.max_len, max(len(r["input_ids"]) for r in rows))
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, ex in enumerate(rows):
            ids = ex["input_ids"][:width]
            input_ids[r, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[r, : len(ids)] = 1
        sentiment = torch.tensor([ex["sent_label"] for ex in batch], dtype=torch.long)  # todoruleid: family 6 (missed)
        topic = torch.tensor([ex["topic_label"] for ex in rows], dtype=torch.long)
        # ids outside the taxonomy (e.g. topics absent from the training dump) are ignored
        topic = torch.where(topic < self.num_topics - 1, topic, torch.full_like(topic, IGNORE_INDEX))  # todoruleid: family 6 (missed)
        langs = torch.tensor([self.lang2id.get(ex["lang"], 0) for ex in rows], dtype=torch.long)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "sentiment_labels": sentiment,
            "topic_labels": topic,
            "lang_ids": langs,
        }


# --- orchestration ---
def load_eval_sets(eval_dir: str, topic2id: Dict[str, int], langs: Sequence[str]) -> Dict[Tuple[str, str], List[dict]]:
    sets: Dict[Tuple[str, str], List[dict]] = {}
    for lang in langs:
        path = os.path.join(eval_dir, f"sentiment.{lang}.jsonl")
        if os.path.exists(path):
            sets[("sentiment", lang)] = [parse_gold_sentiment(r, lang) for r in read_jsonl(path)]
        path = os.path.join(eval_dir, f"topic.{lang}.jsonl")
        if os.path.exists(path):
            sets[("topic", lang)] = [parse_topic(r, topic2id) for r in read_jsonl(path)]
    return sets


def prepare_data(args, tokenizer, is_main: bool = True):
    """Returns (train_features, {(task, lang): dev_features}, topic2id)."""
    sent_train: List[dict] = []
    for path in sorted(glob.glob(args.train_sentiment)):
        sent_train.extend(ex for ex in (parse_review(r) for r in read_jsonl(path)) if ex is not None)
    for spec in args.translate_train or []:
        src, mt, lang = spec.split(":")
        sent_train.extend(load_translate_train(src, mt, lang))

    topic_records = [r for path in sorted(glob.glob(args.train_topic)) for r in read_jsonl(path)]
    topic2id = build_label_map(r["topic"] for r in topic_records)
    topic_train = [parse_topic(r, topic2id) for r in topic_records]

    langs = args.langs.split(",")
    dev = load_eval_sets(args.dev_dir, topic2id, langs)

    train = [ex for ex in sent_train + topic_train if ex["lang"] in langs]
    train = [ex for ex in train if len(ex["text"]) >= args.min_chars]  # ok: MLS309
    train = deduplicate(train)
    train = remove_heldout_overlap(train, dev.values())
    train = cap_per_language(train, args.max_per_lang)
    if args.augment_copies > 0:
        augmenter = TextAugmenter(args.word_dropout, args.template_prob, seed=args.seed)
        train = train + augment(train, augmenter, args.augment_copies)

    stats = Counter((ex["task"], ex["lang"]) for ex in train)
    if is_main:
        for (task, lang), n in sorted(stats.items()):
            logger.info("train %-9s %-3s %8d", task, lang, n)

    train_feats = encode_grouped(tokenizer, train, args.max_len, args.cache_dir, "train", write_cache=is_main)
    dev_feats = {key: encode_examples(tokenizer, exs, args.max_len, args.cache_dir, "dev", write_cache=is_main)
                 for key, exs in dev.items()}
    return train_feats, dev_feats, topic2id
