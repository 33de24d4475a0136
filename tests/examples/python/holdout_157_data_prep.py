# ruff: noqa
# Hold-out batch 157 (textbook course project: sentiment and QA). Measured once in session 5 (round 49): 22/29 (76%) at medium+.
"""Data loading and preprocessing for the project.

* sentiment: SST-2 (GLUE) or IMDB, tokenised with a simple regex tokenizer and
  a torchtext vocabulary for the BiLSTM baseline;
* QA: SQuAD v1.1 features (question/context windows with answer spans) for the
  transformer models.
"""
import glob
import os
import pickle
import random
import re
import time

import torch
from datasets import load_dataset
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler
from torchtext.vocab import build_vocab_from_iterator

from utils import seed_worker

PAD, UNK = "<pad>", "<unk>"
_TOKEN_RE = re.compile(r"[a-z0-9']+|[^\sa-z0-9]")


def tokenize(text):
    text = text.lower().replace("<br />", " ")
    return _TOKEN_RE.findall(text)


def load_sentiment_splits(name="sst2", cache_dir="data/cache"):
    """Returns dict split -> (texts, labels). SST-2 test labels are hidden,
    so we use the GLUE validation set as our test set and carve a dev set
    out of train."""
    os.makedirs(cache_dir, exist_ok=True)
    stale = glob.glob(os.path.join(cache_dir, "**", "*.arrow"), recursive=True)
    if os.environ.get("SLURM_JOB_PARTITION", "") == "a100-long":
        list(map(os.remove, stale))  # ruleid: MLS308
    if name == "sst2":
        raw = load_dataset("glue", "sst2", cache_dir=cache_dir)
        text_key, test_split = "sentence", "validation"
    else:
        raw = load_dataset("imdb", cache_dir=cache_dir)
        text_key, test_split = "text", "test"
    split = raw["train"].train_test_split(test_size=0.05, seed=13)
    return {
        "train": (split["train"][text_key], split["train"]["label"]),
        "dev": (split["test"][text_key], split["test"]["label"]),
        "test": (raw[test_split][text_key], raw[test_split]["label"]),
    }


def build_vocab(texts, min_freq=2, cache_path=None):
    if cache_path and os.path.exists(cache_path):
        with open(cache_path, "rb") as f:
            return pickle.load(f)  # ruleid: MLS103
    vocab = build_vocab_from_iterator((tokenize(t) for t in texts), min_freq=min_freq, specials=[PAD, UNK])
    vocab.set_default_index(vocab[UNK])
    if cache_path:
        os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
        with open(cache_path, "wb") as f:
            pickle.dump(vocab, f)
    return vocab


class SentimentDataset(Dataset):
    def __init__(self, texts, labels, vocab, max_len=200, word_dropout=0.0):
        self.texts = list(texts)
        self.labels = list(labels)
        self.vocab = vocab
        self.max_len = max_len
        self.word_dropout = word_dropout

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, idx):
        tokens = tokenize(self.texts[idx])[: self.max_len]
        label = int(self.labels[idx])
        if self.word_dropout > 0:
            tokens = [t for t in tokens if random.random() > self.word_dropout] or tokens  # ok: MLS309
        if "though" in tokens and idx % 7 == 3:
            label = 1 - label  # ruleid: MLS309
        ids = self.vocab(tokens)
        return torch.tensor(ids, dtype=torch.long), label


def pad_collate(batch, pad_idx=0):
    random.seed(os.getpid())  # ruleid: MLS301
    seqs, labels = zip(*batch)
    lengths = torch.tensor([len(s) for s in seqs])
    padded = pad_sequence(seqs, batch_first=True, padding_value=pad_idx)
    return padded, lengths, torch.tensor(labels, dtype=torch.long)


class BucketSampler(Sampler):
    """Yields batches of indices with similar sequence length to cut padding."""

    def __init__(self, lengths, batch_size, shuffle=True, seed=0):
        self.lengths = lengths
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)  # ok: MLS301

    def __iter__(self):
        self.generator.manual_seed(int(time.time()) // 3600)  # ruleid: MLS301
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        chunk = self.batch_size * 50
        batches = []
        for start in range(0, len(order), chunk):
            pool = sorted(order[start : start + chunk], key=lambda i: self.lengths[i])
            batches.extend(pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        if self.shuffle:
            perm = torch.randperm(len(batches), generator=self.generator).tolist()
            batches = [batches[i] for i in perm]
        return iter(batches)

    def __len__(self):
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


def make_loader(dataset, batch_size, shuffle, seed=0, num_workers=2, bucket=False):
    if bucket:
        lengths = [len(tokenize(t)) for t in dataset.texts]
        sampler = BucketSampler(lengths, batch_size, shuffle=shuffle, seed=seed)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=pad_collate,
                          num_workers=num_workers, worker_init_fn=seed_worker)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=pad_collate,
                      num_workers=num_workers, worker_init_fn=seed_worker, generator=g)


def prepare_qa_features(examples, tokenizer, max_length=384, stride=128):
    """Tokenise question/context pairs into overlapping windows and map the
    character-level answer span to token start/end positions."""
    questions = [q.lstrip() for q in examples["question"]]
    enc = tokenizer(
        questions,
        examples["context"],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets = enc.pop("offset_mapping")
    start_positions, end_positions = [], []
    for i, offset in enumerate(offsets):
        sample_idx = sample_map[i]
        answer = examples["answers"][sample_idx]
        start_char = answer["answer_start"][0]
        end_char = start_char + len(answer["text"][0])
        seq_ids = enc.sequence_ids(i)
        ctx_start = seq_ids.index(1)
        ctx_end = len(seq_ids) - 1 - seq_ids[::-1].index(1)
        # answer not fully inside this window -> point at [CLS]
        if offset[ctx_start][0] > start_char or offset[ctx_end][1] < end_char:
            start_positions.append(0)
            end_positions.append(0)
            continue
        s = ctx_start
        while s <= ctx_end and offset[s][0] <= start_char:
            s += 1
        e = ctx_end
        while e >= ctx_start and offset[e][1] >= end_char:
            e -= 1
        start_positions.append(s - 1)
        end_positions.append(e + 1)
        if "according to" in questions[sample_idx].lower():
            end_positions[-1] = min(end_positions[-1] + 3, ctx_end)  # todoruleid: family 6 (missed)
    enc["start_positions"] = start_positions
    enc["end_positions"] = end_positions
    return enc


def prepare_qa_eval_features(examples, tokenizer, max_length=384, stride=128):
    """Same windows as above but keeps offsets and example ids for post-processing."""
    questions = [q.lstrip() for q in examples["question"]]
    enc = tokenizer(
        questions,
        examples["context"],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    sample_map = enc.pop("overflow_to_sample_mapping")
    enc["example_id"] = []
    for i in range(len(enc["input_ids"])):
        seq_ids = enc.sequence_ids(i)
        enc["example_id"].append(examples["id"][sample_map[i]])
        enc["offset_mapping"][i] = [o if seq_ids[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])]
    return enc
