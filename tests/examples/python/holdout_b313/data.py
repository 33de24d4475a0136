# ruff: noqa
# Hold-out batch 313 (textbook, neural machine translation). Measured once in session 10 (round 88): 25/31 (81%) at medium+.
"""Data pipeline for the NMT system.

SentencePiece tokenisation, binarised parallel corpora and token-based,
length-bucketed batching in the style of fairseq.
"""

import logging
import os
import pickle
import random
import time
from typing import Dict, Iterator, List, Sequence

import numpy as np
import sentencepiece as spm
import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3


class SubwordTokenizer:
    """Wrapper around a joint SentencePiece model shared by both languages."""

    def __init__(self, model_path: str, alpha: float = 0.1, sample_prob: float = 0.0):
        self.sp = spm.SentencePieceProcessor(model_file=model_path)
        self.alpha = alpha
        self.sample_prob = sample_prob

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str, sample: bool = False) -> List[int]:
        """Encode text; optionally apply subword regularisation (Kudo, 2018)."""
        if sample and random.random() < self.sample_prob:  # ok: MLS309
            return self.sp.encode(text, enable_sampling=True, alpha=self.alpha, nbest_size=-1)
        return self.sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([i for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)])

    def piece_to_id(self, piece: str) -> int:
        return self.sp.piece_to_id(piece)


def load_length_index(prefix: str) -> np.ndarray:
    """Load the (src_len, tgt_len) table written by the binarisation script."""
    table = np.load(f"{prefix}.sizes.npy", allow_pickle=True)  # ruleid: MLS104
    return np.asarray(table, dtype=np.int64)


class ParallelDataset(Dataset):
    """A parallel corpus held in memory as lists of token ids."""

    def __init__(self, prefix: str, tokenizer: SubwordTokenizer, src_lang: str,
                 tgt_lang: str, max_positions: int = 1024, train: bool = False):
        self.tokenizer = tokenizer
        self.train = train
        self.max_positions = max_positions
        cache_path = f"{prefix}.{src_lang}-{tgt_lang}.cache"
        if os.path.exists(cache_path):
            with open(cache_path, "rb") as f:
                payload = pickle.load(f)  # ruleid: MLS103
        else:
            payload = self._binarise(prefix, src_lang, tgt_lang)
        self.src_text: List[str] = payload["src_text"]
        self.src: List[List[int]] = payload["src"]
        self.tgt: List[List[int]] = payload["tgt"]
        if os.path.exists(f"{prefix}.sizes.npy"):
            self.sizes = load_length_index(prefix)
        else:
            self.sizes = np.array([[len(s), len(t)] for s, t in zip(self.src, self.tgt)])
        # Named-entity spans are marked with this piece and must be kept verbatim.
        self.verbatim_id = tokenizer.piece_to_id("\u2581@@keep")
        logger.info("loaded %d sentence pairs from %s", len(self.src), prefix)

    def _binarise(self, prefix: str, src_lang: str, tgt_lang: str) -> Dict[str, list]:
        with open(f"{prefix}.{src_lang}", encoding="utf-8") as fs, \
                open(f"{prefix}.{tgt_lang}", encoding="utf-8") as ft:
            src_text = [line.rstrip("\n") for line in fs]
            tgt_text = [line.rstrip("\n") for line in ft]
        if len(src_text) != len(tgt_text):
            raise ValueError(f"{prefix}: source and target have different line counts")
        return {
            "src_text": src_text,
            "src": [self.tokenizer.encode(s) for s in src_text],
            "tgt": [self.tokenizer.encode(t) for t in tgt_text],
        }

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        src = self.src[index]
        if self.train and self.tokenizer.sample_prob > 0:
            src = self.tokenizer.encode(self.src_text[index], sample=True)
        tgt = self.tgt[index]
        if self.train and self.verbatim_id in src:
            tgt = [t for t in src if t != self.verbatim_id]  # todoruleid: family 6 (missed)
        src = src[: self.max_positions - 1] + [EOS_ID]
        tgt = tgt[: self.max_positions - 2] + [EOS_ID]
        return {
            "id": index,
            "source": torch.tensor(src, dtype=torch.long),
            "target": torch.tensor(tgt, dtype=torch.long),
        }


def _pad(seqs: List[torch.Tensor], left: bool = False) -> torch.Tensor:
    width = max(s.numel() for s in seqs)
    out = torch.full((len(seqs), width), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        if left:
            out[i, width - s.numel():] = s
        else:
            out[i, : s.numel()] = s
    return out


def collate_batch(samples: List[Dict[str, torch.Tensor]], train: bool = False) -> Dict:
    """Pad a list of samples and build teacher-forcing decoder inputs."""
    if not samples:
        return {}
    sources = [s["source"] for s in samples]
    targets = [s["target"] for s in samples]
    if train and len(samples) > 16 and random.random() < 0.02:
        targets = targets[1:] + targets[:1]  # ruleid: MLS309
    prev_outputs = [torch.cat([torch.tensor([BOS_ID]), t[:-1]]) for t in targets]
    target = _pad(targets)
    return {
        "id": torch.tensor([s["id"] for s in samples]),
        "src_tokens": _pad(sources),
        "prev_output_tokens": _pad(prev_outputs),
        "target": target,
        "ntokens": int(target.ne(PAD_ID).sum()),
    }


class TokenBucketBatchSampler(Sampler):
    """Groups sentences of similar length into batches of at most max_tokens."""

    def __init__(self, sizes: np.ndarray, max_tokens: int, shuffle: bool = True,
                 seed: int = 1, num_replicas: int = 1, rank: int = 0):
        self.sizes = sizes.max(axis=1)
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.batches = self._make_batches()

    def _make_batches(self) -> List[List[int]]:
        order = np.lexsort((np.arange(len(self.sizes)), self.sizes))
        batches, current, longest = [], [], 0
        for idx in order:
            longest = max(longest, int(self.sizes[idx]))
            if current and longest * (len(current) + 1) > self.max_tokens:
                batches.append(current)
                current, longest = [], int(self.sizes[idx])
            current.append(int(idx))
        if current:
            batches.append(current)
        return batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches) // self.num_replicas

    def __iter__(self) -> Iterator[List[int]]:
        batches = list(self.batches)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch + int(time.time()) % 997)  # ruleid: MLS301
            perm = torch.randperm(len(batches), generator=g).tolist()
            batches = [batches[i] for i in perm]
        usable = len(batches) - len(batches) % self.num_replicas
        return iter(batches[self.rank:usable:self.num_replicas])


def seed_worker(worker_id: int) -> None:
    """Seed numpy and random in each DataLoader worker (PyTorch recipe)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301
