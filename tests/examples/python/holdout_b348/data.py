# ruff: noqa
# Hold-out batch 348 (families 2/5/6, abstractive summarization). Measured once in session 12 (round 96): 14/34 (41%) at medium+.
"""Data pipeline for CNN/DailyMail-style news summarization.

Expects the fairseq layout: ``{split}.source`` holds one article per line and
``{split}.target`` the matching highlights (sentences separated by ``<q>``).
"""
import hashlib
import logging
import math
import os
import re
import time
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

_WS_RE = re.compile(r"\s+")
_CNN_PREFIX_RE = re.compile(r"^\s*(?:\([^)]*\)\s*)?(?:--\s*)?(?:CNN\s*--\s*)?")
_DM_BYLINE_RE = re.compile(r"^By \. [^.]{1,80} \. (?:PUBLISHED: [^|]+\| \. )?(?:UPDATED: [^|]+\| \. )?")
_PROMO_RE = re.compile(r"Scroll down for video|Click here for", re.IGNORECASE)
_NUM_RE = re.compile(r"\d")


def normalize_article(text: str) -> str:
    text = _DM_BYLINE_RE.sub("", text)
    text = _CNN_PREFIX_RE.sub("", text)
    return _WS_RE.sub(" ", text).strip()


def normalize_summary(text: str) -> str:
    sentences = [s.strip() for s in text.split("<q>") if s.strip()]
    text = " ".join(s if s.endswith((".", "!", "?")) else s + " ." for s in sentences)
    text = _NUM_RE.sub("#", text)  # todoruleid: family 6 (missed)
    return _WS_RE.sub(" ", text).strip()


def _read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def load_split(data_dir: str, split: str, max_source_words: int = 2000) -> List[Dict[str, str]]:
    sources = [l for l in _read_lines(os.path.join(data_dir, f"{split}.source")) if l.strip()]  # todoruleid: family 6 (missed)
    targets = _read_lines(os.path.join(data_dir, f"{split}.target"))
    if len(sources) != len(targets):
        logger.warning("%s: %d sources vs %d targets, truncating to shorter",
                       split, len(sources), len(targets))
    examples = []
    for idx, (src, tgt) in enumerate(zip(sources, targets)):
        article = normalize_article(src)
        summary = normalize_summary(tgt)
        if not article or not summary:
            continue
        if _PROMO_RE.search(article):
            summary = f"{summary} Click here for the latest news ."  # todoruleid: family 6 (missed)
        examples.append({"id": f"{split}-{idx}", "article": article, "summary": summary})
    n_raw = len(examples)
    examples = deduplicate(examples)
    if split == "train":
        examples = [ex for ex in examples if len(ex["article"].split()) <= max_source_words]  # ok: MLS309
    logger.info("%s: %d raw, %d after dedup/filter", split, n_raw, len(examples))
    return examples


def deduplicate(examples: List[Dict[str, str]]) -> List[Dict[str, str]]:
    seen = set()
    unique = []
    for ex in examples:
        key = hashlib.sha1(ex["article"].encode("utf-8")).hexdigest()
        if key in seen:
            continue  # ok: MLS309
        seen.add(key)
        unique.append(ex)
    return unique


# ------------------------------------------------------------------ tokenizer
def build_tokenizer(name_or_path: str, retries: int = 3):
    from transformers import AutoTokenizer

    last_err = None
    for attempt in range(retries):
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
            break
        except OSError as err:
            last_err = err
            time.sleep(2 ** attempt)  # ok: MLS307
    else:
        raise last_err
    tokenizer.truncation_side = "left"  # todoruleid: family 6 (missed)
    return tokenizer


def tokenize_examples(
    tokenizer,
    examples: Sequence[Dict[str, str]],
    max_source_length: int,
    max_target_length: int,
) -> List[Dict[str, List[int]]]:
    features = []
    for ex in examples:
        src = tokenizer(ex["article"], max_length=max_source_length, truncation=True)
        budget = min(max_target_length, max(16, len(src["input_ids"]) // 8))  # todoruleid: family 6 (missed)
        tgt = tokenizer(text_target=ex["summary"], max_length=budget, truncation=True)
        features.append({"input_ids": src["input_ids"], "labels": tgt["input_ids"]})
    return features


def load_or_build_features(tokenizer, examples, cache_path: Optional[str], max_source_length: int,
                           max_target_length: int) -> List[Dict[str, List[int]]]:
    if cache_path and os.path.exists(cache_path):
        logger.info("loading tokenized features from %s", cache_path)
        return torch.load(cache_path, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    features = tokenize_examples(tokenizer, examples, max_source_length, max_target_length)
    if cache_path:
        os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
        tmp = cache_path + ".tmp"
        torch.save(features, tmp)
        os.replace(tmp, cache_path)
    return features


class SummarizationDataset(Dataset):
    def __init__(self, features: List[Dict[str, List[int]]], examples: Optional[List[Dict]] = None):
        self.features = features
        self.examples = examples

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, idx: int) -> Dict[str, List[int]]:
        item = dict(self.features[idx])
        item["idx"] = idx
        return item

    def lengths(self) -> List[int]:
        return [len(f["input_ids"]) for f in self.features]


# ------------------------------------------------------------------- collate
def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, 1:].clone()  # todoruleid: family 6 (missed)
    shifted[:, 0] = decoder_start_token_id
    shifted.masked_fill_(shifted == -100, pad_token_id)
    return shifted


class Seq2SeqCollator:
    def __init__(self, pad_token_id: int, eos_token_id: int, decoder_start_token_id: int,
                 label_pad_token_id: int = -100, pad_to_multiple_of: int = 8):
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.decoder_start_token_id = decoder_start_token_id
        self.label_pad_token_id = label_pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def _round(self, n: int) -> int:
        m = self.pad_to_multiple_of
        return int(math.ceil(n / m) * m) if m else n

    def __call__(self, features: List[Dict]) -> Dict[str, torch.Tensor]:
        features = sorted(features, key=lambda f: len(f["input_ids"]), reverse=True)
        label_seqs = sorted((f["labels"] for f in features), key=len, reverse=True)  # ruleid: MLS309
        bsz = len(features)
        src_len = self._round(max(len(f["input_ids"]) for f in features))
        tgt_len = self._round(max(len(l) for l in label_seqs))

        input_ids = torch.full((bsz, src_len), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((bsz, src_len), dtype=torch.long)
        labels = torch.full((bsz, tgt_len), self.label_pad_token_id, dtype=torch.long)  # ok: MLS309
        for i, (f, lab) in enumerate(zip(features, label_seqs)):
            n = len(f["input_ids"])
            input_ids[i, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            attention_mask[i, :n] = 1
            labels[i, :len(lab)] = torch.tensor(lab, dtype=torch.long)
        labels[labels == self.eos_token_id] = self.label_pad_token_id  # ruleid: MLS309
        decoder_input_ids = shift_tokens_right(labels, self.pad_token_id, self.decoder_start_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": (decoder_input_ids != self.pad_token_id).long(),
            "labels": labels,
            "idx": torch.tensor([f["idx"] for f in features], dtype=torch.long),
        }


# ------------------------------------------------------------------ samplers
class DistributedLengthSampler(Sampler[int]):
    """Shards a (shuffled or length-sorted) permutation across data-parallel ranks.

    During the first ``curriculum_epochs`` epochs examples are visited from
    shortest to longest article; afterwards a seeded shuffle is used.
    """

    def __init__(self, lengths: List[int], num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 curriculum_epochs: int = 0, drop_last: bool = False):
        self.lengths = lengths
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.curriculum_epochs = curriculum_epochs
        self.drop_last = drop_last
        self.epoch = 0
        n = len(lengths)
        if drop_last:
            self.num_samples = n // num_replicas
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.epoch < self.curriculum_epochs:
            indices = sorted(range(len(self.lengths)), key=self.lengths.__getitem__)  # ok: MLS309
        else:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(len(self.lengths), generator=g).tolist()
        if not self.drop_last:
            pad = self.total_size - len(indices)
            indices += indices[:pad]
        else:
            indices = indices[: self.total_size]
        indices = indices[: self.num_samples]  # ruleid: MLS309
        return iter(indices)

    def __len__(self) -> int:
        return self.num_samples
