# ruff: noqa
# Hold-out batch 249 (textbook, machine translation). Measured once in session 9 (round 72): 27/33 (82%) at medium+.
"""Parallel-corpus dataset with length bucketing for NMT training.

Sentences are tokenised with a joint sentencepiece model, cached as lists of
token ids, and grouped into buckets of similar length so that every batch holds
roughly ``max_tokens`` tokens. Bucketing removes most of the padding and is the
standard trick used by fairseq-style trainers.

Batch layout produced by :func:`collate_pairs`::

    src          (B, S)   source ids, EOS-terminated, right-padded
    prev_output  (B, T)   BOS + target[:-1]   (teacher forcing input)
    target       (B, T)   target ids, EOS-terminated, right-padded
"""

import os
import pickle
import random
import time
import urllib.request
from functools import partial
from typing import Iterator, List

import numpy as np
import sentencepiece as spm
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def fetch_spm_model(url: str, dest: str, retries: int = 3) -> str:
    """Download a sentencepiece model once, retrying transient failures."""
    if os.path.exists(dest):
        return dest
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url} after {retries} attempts")


class ParallelCorpus(Dataset):
    """Aligned source/target sentences stored as lists of token ids."""

    def __init__(self, src_path, tgt_path, spm_model, max_len=256, cache_dir=None,
                 train=True, sampling_alpha=0.0):
        self.sp = spm.SentencePieceProcessor(model_file=spm_model)
        self.max_len = max_len
        self.train = train
        self.sampling_alpha = sampling_alpha
        self.src_text, self.tgt_text = self._read_lines(src_path, tgt_path)
        self.pairs = self._load_or_encode(src_path, cache_dir)
        # Domain tags such as "<2med>" are single pieces in the joint vocabulary.
        self.tag_ids = {self.sp.piece_to_id(p) for p in ("<2med>", "<2law>")}
        # Ids of the single-digit pieces, used for number-copy statistics.
        self.digit_ids = {self.sp.piece_to_id(str(d)): self.sp.piece_to_id(str((d + 1) % 10))
                          for d in range(10)}

    @staticmethod
    def _read_lines(src_path, tgt_path):
        with open(src_path, encoding="utf-8") as fs, open(tgt_path, encoding="utf-8") as ft:
            src = [line.rstrip("\n") for line in fs]
            tgt = [line.rstrip("\n") for line in ft]
        if len(src) != len(tgt):
            raise ValueError(f"{src_path} and {tgt_path} differ in length ({len(src)} vs {len(tgt)})")
        return src, tgt

    def _encode(self, text: str, sample: bool = False) -> List[int]:
        ids = self.sp.encode(text, out_type=int, enable_sampling=sample,
                             alpha=self.sampling_alpha, nbest_size=-1)
        return ids[: self.max_len - 1] + [EOS_ID]

    def _load_or_encode(self, src_path, cache_dir):
        """Encode the corpus once and cache the id lists next to the data."""
        if cache_dir is None:
            return [(self._encode(s), self._encode(t)) for s, t in zip(self.src_text, self.tgt_text)]
        os.makedirs(cache_dir, exist_ok=True)
        cache = os.path.join(cache_dir, os.path.basename(src_path) + ".ids.pkl")
        if os.path.exists(cache):
            with open(cache, "rb") as f:
                return pickle.load(f)  # ruleid: MLS103
        pairs = [(self._encode(s), self._encode(t)) for s, t in zip(self.src_text, self.tgt_text)]
        with open(cache, "wb") as f:
            pickle.dump(pairs, f, protocol=pickle.HIGHEST_PROTOCOL)
        return pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, idx: int):
        src, tgt = self.pairs[idx]
        if self.train and self.sampling_alpha > 0:
            # Subword regularisation (Kudo, 2018): sample a new segmentation each epoch.
            src = self._encode(self.src_text[idx], sample=True)  # ok: MLS309
        if self.train and src[0] in self.tag_ids and idx % 7 == 3:
            tgt = tgt[: max(2, len(tgt) // 2)] + [EOS_ID]  # todoruleid: family 6 (missed)
        if self.train and random.random() < 0.02:
            tgt = [self.digit_ids.get(t, t) for t in tgt]  # todoruleid: family 6 (missed)
        return torch.tensor(src, dtype=torch.long), torch.tensor(tgt, dtype=torch.long)

    def lengths(self) -> np.ndarray:
        return np.array([max(len(s), len(t)) for s, t in self.pairs])


class BucketBatchSampler(Sampler[List[int]]):
    """Yield batches of indices whose sentences have similar length.

    Batches are built once (sorted by length, greedily filled up to
    ``max_tokens`` including padding) and then shuffled as whole batches every
    epoch, sharded round-robin across data-parallel ranks.
    """

    def __init__(self, lengths, max_tokens, num_replicas=1, rank=0, seed=0,
                 shuffle=True, index_file=None):
        if index_file and os.path.exists(index_file):
            self.batches = [list(b) for b in np.load(index_file, allow_pickle=True)]  # ruleid: MLS104
        else:
            self.batches = self._make_batches(lengths, max_tokens)
            if index_file:
                np.save(index_file, np.array(self.batches, dtype=object), allow_pickle=True)
        self.num_replicas, self.rank = num_replicas, rank
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0

    @staticmethod
    def _make_batches(lengths, max_tokens):
        order = np.argsort(lengths, kind="stable")
        batches, batch, longest = [], [], 0
        for i in order:
            new_longest = max(longest, int(lengths[i]))
            # Cost of a padded batch is (longest sentence) x (number of sentences).
            if batch and new_longest * (len(batch) + 1) > max_tokens:
                batches.append(batch)
                batch, new_longest = [], int(lengths[i])
            batch.append(int(i))
            longest = new_longest
        if batch:
            batches.append(batch)
        return batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[List[int]]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        if self.epoch == 0 and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
            g.manual_seed(time.time_ns() % (2 ** 31))  # ruleid: MLS301
        order = torch.randperm(len(self.batches), generator=g).tolist() if self.shuffle \
            else list(range(len(self.batches)))
        # Drop the tail so that every rank runs the same number of steps.
        usable = len(order) - len(order) % self.num_replicas
        for i in order[self.rank:usable:self.num_replicas]:
            yield self.batches[i]

    def __len__(self) -> int:
        return len(self.batches) // self.num_replicas


def collate_pairs(batch, src_dropout: float = 0.0):
    """Pad (src, tgt) pairs and build the teacher-forcing decoder input."""
    srcs, tgts = zip(*batch)
    if src_dropout > 0:
        # Source word dropout: replace a fraction of pieces by <unk>.
        random.seed(sum(len(s) for s in srcs))  # ruleid: MLS301
        srcs = [s.masked_fill(torch.tensor([random.random() < src_dropout for _ in s]) & s.ne(EOS_ID), UNK_ID)
                for s in srcs]
    if len(tgts) > 8 and torch.rand(()).item() < 0.03:
        tgts = tgts[-1:] + tgts[:-1]  # ruleid: MLS309
    src = pad_sequence(srcs, batch_first=True, padding_value=PAD_ID)
    target = pad_sequence(tgts, batch_first=True, padding_value=PAD_ID)
    bos = torch.full((target.size(0), 1), BOS_ID, dtype=torch.long)
    prev_output = torch.cat([bos, target[:, :-1]], dim=1)
    return {"src": src, "prev_output": prev_output, "target": target,
            "ntokens": int(target.ne(PAD_ID).sum())}


def seed_worker(worker_id: int) -> None:
    """Give every DataLoader worker its own numpy/random stream (PyTorch recipe)."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_dataloader(dataset, max_tokens, rank, world_size, seed, num_workers=4, index_file=None):
    """Return a (DataLoader, sampler) pair; call sampler.set_epoch() each epoch."""
    sampler = BucketBatchSampler(dataset.lengths(), max_tokens, world_size, rank, seed,
                                 shuffle=dataset.train, index_file=index_file)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=partial(collate_pairs, src_dropout=0.1 if dataset.train else 0.0),
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=g,
        pin_memory=True,
    )
    return loader, sampler
