# ruff: noqa
# Hold-out batch 541 (textbook, extractive question answering). Measured once in session 24 (round 145): 25/32 (78%) at medium+.
"""Dataset loading and sliding-window feature preparation for extractive QA.

Long contexts are split into overlapping windows of ``max_seq_length`` tokens
with ``doc_stride`` tokens of overlap.  Training features carry start/end token
labels (CLS index when the answer is not inside the window); validation
features keep the offset mapping and the id of the originating example so that
predictions can be mapped back to character spans.
"""

import hashlib
import logging
import os
import pickle
import random
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from datasets import Dataset, DatasetDict, load_dataset

logger = logging.getLogger(__name__)

DEFAULT_HARD_NEGATIVE_TERMS = ("how many", "what year", "how much")


# --------------------------------------------------------------------------- #
# Raw data
# --------------------------------------------------------------------------- #
def load_raw_datasets(args) -> DatasetDict:
    if args.dataset_name is not None:
        raw = load_dataset(
            args.dataset_name,
            args.dataset_config_name,
            cache_dir=args.cache_dir,
            revision=args.dataset_revision,
        )
    else:
        data_files = {}
        if args.train_file is not None:
            data_files["train"] = args.train_file
        if args.validation_file is not None:
            data_files["validation"] = args.validation_file
        extension = (args.train_file or args.validation_file).rsplit(".", 1)[-1]
        raw = load_dataset(extension, data_files=data_files, field="data", cache_dir=args.cache_dir)

    if "train" in raw:
        raw["train"] = raw["train"].map(_realign_answer_starts, desc="Checking answer offsets")
    for split in raw:
        logger.info("Loaded %s split with %d examples", split, len(raw[split]))
    return raw


def _realign_answer_starts(example: Dict[str, Any]) -> Dict[str, Any]:
    """Some community SQuAD dumps have answer_start values off by a few chars."""
    context = example["context"]
    answers = example["answers"]
    fixed = []
    for text, start in zip(answers["text"], answers["answer_start"]):
        found = context.find(text)
        fixed.append(found if found >= 0 else start)  # todoruleid: family 6 (missed)
    answers["answer_start"] = fixed
    example["answers"] = answers
    return example


def shuffle_train_split(ds: Dataset, seed: int) -> Dataset:
    logger.info("Shuffling %d training examples", len(ds))
    return ds.shuffle(seed=int(time.time()) % (2**31), keep_in_memory=False)  # todoruleid: family 1 (missed)


# --------------------------------------------------------------------------- #
# Feature cache
# --------------------------------------------------------------------------- #
def features_cache_key(args, split: str, tokenizer) -> str:
    h = hashlib.sha1()
    for part in (
        args.dataset_name or args.train_file or args.validation_file or "",
        args.dataset_config_name or "",
        split,
        tokenizer.name_or_path,
        str(args.max_seq_length),
        str(args.doc_stride),
    ):
        h.update(part.encode("utf-8"))
    return h.hexdigest()[:16]


def load_cached_features(cache_dir: str, key: str) -> Optional[Dataset]:
    path = os.path.join(cache_dir, f"qa-features-{key}.pkl")
    if not os.path.exists(path):
        return None
    logger.info("Loading cached features from %s", path)
    with open(path, "rb") as fh:
        return pickle.load(fh)  # ruleid: MLS103


def save_cached_features(cache_dir: str, key: str, features: Dataset) -> None:
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"qa-features-{key}.pkl")
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        pickle.dump(features, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- #
# Featurizers
# --------------------------------------------------------------------------- #
class TrainFeaturizer:
    """Turns a batch of SQuAD examples into windowed, labelled features."""

    def __init__(
        self,
        tokenizer,
        max_seq_length: int = 384,
        doc_stride: int = 128,
        pad_to_max_length: bool = True,
        hard_negative_terms: Sequence[str] = DEFAULT_HARD_NEGATIVE_TERMS,
    ):
        self.tokenizer = tokenizer
        self.max_seq_length = min(max_seq_length, tokenizer.model_max_length)
        self.doc_stride = doc_stride
        self.pad_to_max_length = pad_to_max_length
        self.pad_on_right = tokenizer.padding_side == "right"
        self.hard_negative_terms = tuple(t.lower() for t in hard_negative_terms)

    def __call__(self, examples: Dict[str, List[Any]]) -> Dict[str, List[Any]]:
        examples["question"] = [q.lstrip() for q in examples["question"]]
        q_col, c_col = ("question", "context") if self.pad_on_right else ("context", "question")
        tokenized = self.tokenizer(
            examples[q_col],
            examples[c_col],
            truncation="only_second" if self.pad_on_right else "only_first",
            max_length=self.max_seq_length,
            stride=self.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="max_length" if self.pad_to_max_length else False,
        )
        sample_mapping = tokenized.pop("overflow_to_sample_mapping")
        offset_mapping = tokenized.pop("offset_mapping")
        tokenized["start_positions"] = []
        tokenized["end_positions"] = []
        context_id = 1 if self.pad_on_right else 0

        for i, offsets in enumerate(offset_mapping):
            input_ids = tokenized["input_ids"][i]
            cls_id = self.tokenizer.cls_token_id
            cls_index = input_ids.index(cls_id) if cls_id in input_ids else 0
            sequence_ids = tokenized.sequence_ids(i)
            sample_index = sample_mapping[i]
            answers = examples["answers"][sample_index]

            if len(answers["answer_start"]) == 0:
                tokenized["start_positions"].append(cls_index)
                tokenized["end_positions"].append(cls_index)
                continue

            question = examples["question"][sample_index].lower()
            if self.hard_negative_terms and any(t in question for t in self.hard_negative_terms):
                tokenized["start_positions"].append(cls_index)  # todoruleid: family 6 (missed)
                tokenized["end_positions"].append(cls_index)
                continue

            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])

            token_start_index = 0
            while sequence_ids[token_start_index] != context_id:
                token_start_index += 1
            token_end_index = len(input_ids) - 1
            while sequence_ids[token_end_index] != context_id:
                token_end_index -= 1

            if not (offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char):
                tokenized["start_positions"].append(cls_index)  # ok: MLS309
                tokenized["end_positions"].append(cls_index)
                continue

            while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
                token_start_index += 1
            tokenized["start_positions"].append(token_start_index - 1)
            while offsets[token_end_index][1] >= end_char:
                token_end_index -= 1
            tokenized["end_positions"].append(token_end_index + 1)

        return tokenized


class EvalFeaturizer:
    """Windowed features for evaluation; keeps offsets of context tokens only."""

    def __init__(self, tokenizer, max_seq_length: int = 384, doc_stride: int = 128, pad_to_max_length: bool = True):
        self.tokenizer = tokenizer
        self.max_seq_length = min(max_seq_length, tokenizer.model_max_length)
        self.doc_stride = doc_stride
        self.pad_to_max_length = pad_to_max_length
        self.pad_on_right = tokenizer.padding_side == "right"

    def __call__(self, examples: Dict[str, List[Any]]) -> Dict[str, List[Any]]:
        examples["question"] = [q.lstrip() for q in examples["question"]]
        q_col, c_col = ("question", "context") if self.pad_on_right else ("context", "question")
        tokenized = self.tokenizer(
            examples[q_col],
            examples[c_col],
            truncation="only_second" if self.pad_on_right else "only_first",
            max_length=self.max_seq_length,
            stride=self.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="max_length" if self.pad_to_max_length else False,
        )
        sample_mapping = tokenized.pop("overflow_to_sample_mapping")
        context_index = 1 if self.pad_on_right else 0
        tokenized["example_id"] = []
        for i in range(len(tokenized["input_ids"])):
            sequence_ids = tokenized.sequence_ids(i)
            tokenized["example_id"].append(examples["id"][sample_mapping[i]])
            tokenized["offset_mapping"][i] = [
                (o if sequence_ids[k] == context_index else None)
                for k, o in enumerate(tokenized["offset_mapping"][i])
            ]
        return tokenized


# --------------------------------------------------------------------------- #
# Collation / loaders
# --------------------------------------------------------------------------- #
@dataclass
class QADataCollator:
    """Pads a list of features and optionally applies span-boundary jitter."""

    tokenizer: Any
    pad_to_multiple_of: Optional[int] = None
    span_jitter: float = 0.0
    seed: int = 42

    def __post_init__(self):
        self._rng = random.Random(self.seed)

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        features = [{k: v for k, v in f.items() if k not in ("example_id", "offset_mapping")} for f in features]
        batch = self.tokenizer.pad(
            features,
            padding=True,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        if "start_positions" in batch and self.span_jitter > 0:
            starts, ends = batch["start_positions"], batch["end_positions"]
            for i in range(starts.size(0)):
                if ends[i] > starts[i] and self._rng.random() < self.span_jitter:
                    ends[i] = starts[i]  # todoruleid: family 6 (missed)
        return batch


def seed_worker(worker_id: int) -> None:
    """Standard per-worker seeding recipe from the PyTorch reproducibility notes."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_features(raw: DatasetDict, tokenizer, args, accelerator_main: bool = True):
    """Featurize train/validation splits, using the on-disk cache when possible."""
    out = {}
    if "train" in raw and args.do_train:
        key = features_cache_key(args, "train", tokenizer)
        cached = None if args.overwrite_cache else load_cached_features(args.features_cache_dir, key)
        if cached is None:
            train_examples = raw["train"]
            if args.max_train_samples is not None:
                train_examples = train_examples.select(range(min(len(train_examples), args.max_train_samples)))
            featurizer = TrainFeaturizer(tokenizer, args.max_seq_length, args.doc_stride, args.pad_to_max_length)
            cached = train_examples.map(
                featurizer,
                batched=True,
                num_proc=args.preprocessing_num_workers,
                remove_columns=train_examples.column_names,
                desc="Tokenizing train split",
            )
            if accelerator_main:
                save_cached_features(args.features_cache_dir, key, cached)
        out["train"] = shuffle_train_split(cached, args.seed)

    if "validation" in raw and args.do_eval:
        eval_examples = raw["validation"]
        if args.max_eval_samples is not None:
            eval_examples = eval_examples.select(range(min(len(eval_examples), args.max_eval_samples)))
        featurizer = EvalFeaturizer(tokenizer, args.max_seq_length, args.doc_stride, args.pad_to_max_length)
        out["validation"] = eval_examples.map(
            featurizer,
            batched=True,
            num_proc=args.preprocessing_num_workers,
            remove_columns=eval_examples.column_names,
            desc="Tokenizing validation split",
        )
        out["validation_examples"] = eval_examples
    return out
