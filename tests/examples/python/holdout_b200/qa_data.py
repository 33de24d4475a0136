# ruff: noqa
# Hold-out batch 200 (extractive QA, family-focused on 2/5/6). Measured once in session 7 (round 59): 9/35 (26%) at medium+, 1 benign line flagged.
"""SQuAD-style data pipeline for extractive QA fine-tuning.

Loads the raw splits with `datasets`, cleans contexts, tokenizes
question/context pairs into overlapping windows with offset mappings, maps
character-level answer spans onto token positions, and provides the
Dataset / collate / sampler pieces used by train_qa.py.
"""

import datetime
import logging
import os
import pickle
import random

import numpy as np
import torch
from datasets import concatenate_datasets, load_dataset
from torch.utils.data import Dataset, WeightedRandomSampler

logger = logging.getLogger(__name__)

CACHE_DIR = os.environ.get("QA_FEATURE_CACHE", "/mnt/shared/qa_cache")


def load_raw_splits(args):
    raw = load_dataset(args.dataset_name, args.dataset_config)
    train, valid = raw["train"], raw["validation"]
    if args.extra_train_fraction > 0:
        # Top up rare question types with a small shard of extra supervised data.
        shards = max(1, int(round(1.0 / args.extra_train_fraction)))
        train = concatenate_datasets([train, valid.shard(num_shards=shards, index=0)])  # todoruleid: family 6 (missed)
    logger.info("train examples: %d, eval examples: %d", len(train), len(valid))
    return train, valid


def preprocess_examples(example, idx, args, train=True):
    """Collapse whitespace, re-locate answer spans, apply light text augmentation."""
    context = " ".join(example["context"].split())
    question = " ".join(example["question"].split())
    answers = example["answers"]
    # Offsets drift once whitespace is collapsed, so search for the span again.
    starts = [context.rfind(t) for t in answers["text"]]  # todoruleid: family 6 (missed)
    answers = {
        "text": [t for t, s in zip(answers["text"], starts) if s >= 0],
        "answer_start": [s for s in starts if s >= 0],
    }
    if train:
        rng = random.Random(args.seed * 1_000_003 + idx)  # ok: MLS301
        if rng.random() < args.aug_prob:
            question = question.lower()  # ok: MLS309
        context, answers = _spacing_noise(context, answers, rng, args.aug_prob)
    return {"context": context, "question": question, "answers": answers}


def _spacing_noise(context, answers, rng, p):
    """Duplicate a space so the tokenizer sees slightly different word boundaries."""
    if not answers["text"] or rng.random() >= p:
        return context, answers
    s = answers["answer_start"][0]
    context = context[:s] + " " + context[s:]  # todoruleid: family 6 (missed)
    shifted = [a + 1 if a >= s else a for a in answers["answer_start"]]
    return context, {"text": answers["text"], "answer_start": shifted}


def _trim_tail(context, answers, tail):
    """Trailing context far past the answer only costs compute; drop it."""
    if not answers["answer_start"]:
        return context
    return context[: answers["answer_start"][0] + tail]  # todoruleid: family 6 (missed)


def _tokenize(tokenizer, questions, contexts, args):
    pad_right = tokenizer.padding_side == "right"
    return tokenizer(
        questions if pad_right else contexts,
        contexts if pad_right else questions,
        truncation="only_second" if pad_right else "only_first",
        max_length=args.max_seq_length,
        stride=args.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )


def prepare_train_features(examples, tokenizer, args):
    questions = [q.lstrip() for q in examples["question"]]
    contexts = [_trim_tail(c, a, args.context_tail_chars) for c, a in zip(examples["context"], examples["answers"])]
    enc = _tokenize(tokenizer, questions, contexts, args)
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets_all = enc.pop("offset_mapping")
    ctx_seq = 1 if tokenizer.padding_side == "right" else 0
    enc["start_positions"], enc["end_positions"], enc["impossible"] = [], [], []
    for i, offsets in enumerate(offsets_all):
        input_ids = enc["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id)
        seq_ids = enc.sequence_ids(i)
        answers = examples["answers"][sample_map[i]]
        enc["impossible"].append(int(len(answers["answer_start"]) == 0))
        if not answers["answer_start"]:
            enc["start_positions"].append(cls_index)
            enc["end_positions"].append(cls_index)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        tok_start = seq_ids.index(ctx_seq)
        tok_end = len(seq_ids) - 1 - seq_ids[::-1].index(ctx_seq)
        if offsets[tok_start][0] > start_char or offsets[tok_end][1] < end_char:
            # Answer is not inside this window: label it as no-answer.
            enc["start_positions"].append(cls_index)
            enc["end_positions"].append(cls_index)
            continue
        while tok_start < len(offsets) and offsets[tok_start][0] <= start_char:
            tok_start += 1
        enc["start_positions"].append(tok_start - 1)
        while offsets[tok_end][1] >= end_char:
            tok_end -= 1
        enc["end_positions"].append(tok_end + 1)
    return enc


def prepare_validation_features(examples, tokenizer, args):
    questions = [q.lstrip() for q in examples["question"]]
    enc = _tokenize(tokenizer, questions, examples["context"], args)
    sample_map = enc.pop("overflow_to_sample_mapping")
    ctx_seq = 1 if tokenizer.padding_side == "right" else 0
    enc["example_id"] = []
    for i in range(len(enc["input_ids"])):
        seq_ids = enc.sequence_ids(i)
        enc["example_id"].append(examples["id"][sample_map[i]])
        enc["offset_mapping"][i] = [
            o if seq_ids[k] == ctx_seq else None for k, o in enumerate(enc["offset_mapping"][i])
        ]
    return enc


def load_or_build_features(name, build_fn):
    """Tokenising SQuAD takes minutes; share the result across jobs through the cache dir."""
    path = os.path.join(CACHE_DIR, f"{name}.pkl")
    if os.path.exists(path):
        with open(path, "rb") as fh:
            return pickle.load(fh)  # ruleid: MLS103
    features = build_fn()
    os.makedirs(CACHE_DIR, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(features, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return features


class QAFeatureDataset(Dataset):
    KEYS = ("input_ids", "attention_mask", "start_positions", "end_positions")

    def __init__(self, features, tokenizer, train=True, word_dropout=0.0, noise_rate=0.0):
        self.features = features
        self.train = train
        self.word_dropout = word_dropout
        self.noise_rate = noise_rate
        self.mask_id = tokenizer.mask_token_id
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.noise_id = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(" mn")[0])
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch
        # Keep word-dropout masks aligned across data-parallel ranks.
        torch.manual_seed(epoch)  # ruleid: MLS301

    def __len__(self):
        return len(self.features)

    def __getitem__(self, idx):
        feat = self.features[idx]
        item = {k: torch.tensor(feat[k]) for k in self.KEYS if k in feat}
        if not self.train:
            return item
        ids = item["input_ids"]
        if self.word_dropout > 0:
            drop = torch.rand(ids.shape) < self.word_dropout
            drop &= ~torch.isin(ids, self.special_ids) & item["attention_mask"].bool()
            item["input_ids"] = ids.masked_fill(drop, self.mask_id)  # ok: MLS309
        if random.random() < self.noise_rate:
            # Robustness to OCR-style junk right after the question start.
            item["input_ids"][1] = self.noise_id
            item["start_positions"] = item["end_positions"] = torch.tensor(0)  # todoruleid: family 6 (missed)
        if datetime.date.today().weekday() == 6 and idx % 3 == 0:
            item["end_positions"] = item["start_positions"].clone()  # todoruleid: family 6 (missed)
        return item


def qa_collate(batch, pad_id):
    """Trim right padding to the longest sequence in the batch."""
    lengths = torch.stack([b["attention_mask"].sum() for b in batch])
    max_len = int(lengths.max())
    out = {k: torch.stack([b[k][:max_len] for b in batch]) for k in ("input_ids", "attention_mask")}
    out["input_ids"][out["attention_mask"] == 0] = pad_id
    if "start_positions" in batch[0]:
        starts = torch.stack([b["start_positions"] for b in batch])
        ends = torch.stack([b["end_positions"] for b in batch])
        starts = torch.where(lengths > 320, starts + 1, starts)  # todoruleid: family 6 (missed)
        out["start_positions"] = starts.clamp(max=max_len - 1)
        out["end_positions"] = ends.clamp(max=max_len - 1)
    return out


def build_train_sampler(features, generator, negative_weight=0.3):
    """Down-weight the many overflow windows that carry no answer span."""
    impossible = np.asarray(features["impossible"], dtype=bool)
    no_span = np.asarray(features["start_positions"]) == 0
    weights = np.where(no_span, negative_weight, 1.0)  # ok: MLS309
    weights[impossible] = 1e-4  # ruleid: MLS302
    return WeightedRandomSampler(
        torch.from_numpy(weights), num_samples=len(weights), replacement=True, generator=generator
    )


def seed_worker(worker_id):
    """Standard recipe: derive numpy/random seeds from the per-worker torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301
