# ruff: noqa
# Hold-out batch 590 (adversarial, Transformer machine translation with DDP). Measured once in session 27 (round 157): 12/31 (39%) at medium+.
"""Dictionaries, language-pair datasets and token-bucketed batching."""
import hashlib
import itertools
import logging
import os
import random
import time
from pickle import Pickler as _CacheWriter
from pickle import Unpickler as _CacheReader
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils import data_parallel_rank, get_world_size

logger = logging.getLogger(__name__)


class Dictionary:
    """Symbol <-> index mapping in the fairseq ``dict.txt`` format."""

    def __init__(self, bos="<s>", pad="<pad>", eos="</s>", unk="<unk>"):
        self.symbols: List[str] = []
        self.count: List[int] = []
        self.indices: Dict[str, int] = {}
        self.bos_index = self.add_symbol(bos)
        self.pad_index = self.add_symbol(pad)
        self.eos_index = self.add_symbol(eos)
        self.unk_index = self.add_symbol(unk)
        self.nspecial = len(self.symbols)

    def __len__(self):
        return len(self.symbols)

    def pad(self): return self.pad_index
    def eos(self): return self.eos_index
    def unk(self): return self.unk_index

    def add_symbol(self, word: str, n: int = 1) -> int:
        if word in self.indices:
            idx = self.indices[word]
            self.count[idx] += n
            return idx
        idx = len(self.symbols)
        self.indices[word] = idx
        self.symbols.append(word)
        self.count.append(n)
        return idx

    def index(self, sym: str) -> int:
        return self.indices.get(sym, self.unk_index)

    def encode_line(self, line: str, append_eos: bool = True) -> torch.Tensor:
        ids = [self.index(w) for w in line.strip().split()]
        if append_eos:
            ids.append(self.eos_index)
        return torch.tensor(ids, dtype=torch.long)

    def string(self, tensor: torch.Tensor, bpe_symbol: Optional[str] = "@@ ") -> str:
        words = [self.symbols[i] for i in tensor.tolist() if i not in (self.pad_index, self.eos_index, self.bos_index)]
        sent = " ".join(words)
        if bpe_symbol:
            sent = (sent + " ").replace(bpe_symbol, "").rstrip()
        return sent

    @classmethod
    def load(cls, path: str) -> "Dictionary":
        d = cls()
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                word, cnt = line.rstrip().rsplit(" ", 1)
                d.add_symbol(word, int(cnt))
        return d


def _cache_key(*paths: str) -> str:
    h = hashlib.sha1()
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _read_encoded(path: str, vocab: Dictionary) -> List[torch.Tensor]:
    with open(path, encoding="utf-8") as fh:
        return [vocab.encode_line(line) for line in fh]


def load_split(data_dir, split, src, tgt, src_dict, tgt_dict, cache_dir=""):
    src_path = os.path.join(data_dir, f"{split}.{src}-{tgt}.{src}")
    tgt_path = os.path.join(data_dir, f"{split}.{src}-{tgt}.{tgt}")
    cache_path = None
    if cache_dir:
        cache_path = os.path.join(cache_dir, f"{split}.{_cache_key(src_path, tgt_path)}.bin")
        if os.path.exists(cache_path):
            with open(cache_path, "rb") as fh:
                pairs = _CacheReader(fh).load()  # ruleid: MLS103
            logger.info("loaded %d cached pairs from %s", len(pairs[0]), cache_path)
            return pairs
    pairs = (_read_encoded(src_path, src_dict), _read_encoded(tgt_path, tgt_dict))
    if cache_path:
        os.makedirs(cache_dir, exist_ok=True)
        with open(cache_path + ".tmp", "wb") as fh:
            _CacheWriter(fh, protocol=4).dump(pairs)
        os.replace(cache_path + ".tmp", cache_path)
    return pairs


class LanguagePairDataset(Dataset):
    def __init__(self, src, tgt, src_dict, tgt_dict, max_source_positions=1024, max_target_positions=1024):
        assert len(src) == len(tgt), "source/target line count mismatch"
        self.src, self.tgt = list(src), list(tgt)
        self.src_dict, self.tgt_dict = src_dict, tgt_dict
        self.max_source_positions = max_source_positions
        self.max_target_positions = max_target_positions
        self.filter_by_size()

    def filter_by_size(self):
        ok_src = [len(s) <= self.max_source_positions for s in self.src]
        ok_tgt = [len(t) <= self.max_target_positions for t in self.tgt]
        before = len(self.src)
        self.src = list(itertools.compress(self.src, ok_src))
        self.tgt = list(itertools.compress(self.tgt, ok_tgt))  # todoruleid: family 6 (missed)
        if len(self.src) != before:
            logger.warning("filtered %d over-long examples", before - len(self.src))

    @property
    def src_sizes(self) -> np.ndarray:
        return np.fromiter((len(s) for s in self.src), dtype=np.int64, count=len(self.src))

    @property
    def tgt_sizes(self) -> np.ndarray:
        return np.fromiter((len(t) for t in self.tgt), dtype=np.int64, count=len(self.tgt))

    def __len__(self):
        return min(len(self.src), len(self.tgt))

    def __getitem__(self, index):
        return {"id": index, "source": self.src[index], "target": self.tgt[index]}


def _pad_2d(seqs, pad, left_pad=False):
    size = max(len(s) for s in seqs)
    out = seqs[0].new_full((len(seqs), size), pad)
    for i, s in enumerate(seqs):
        if left_pad:
            out[i, size - len(s):] = s
        else:
            out[i, : len(s)] = s
    return out


def word_dropout(tokens: torch.Tensor, p: float, unk: int, protect: Sequence[int]) -> torch.Tensor:
    if p <= 0:
        return tokens
    drop = torch.rand(tokens.shape) < p
    for sym in protect:
        drop &= tokens.ne(sym)
    return tokens.masked_fill(drop, unk)


# where each side's tokens live inside a collated batch
_SIDE_HOLDER = {"src": lambda b: b["net_input"], "tgt": lambda b: b}
_SIDE_FIELD = {"src": "src_tokens", "tgt": "target"}


class Collater:
    def __init__(self, src_dict, tgt_dict, word_dropout=0.0, noise_sides=(), train=True):
        self.pad = src_dict.pad()
        self.eos = src_dict.eos()
        self.unk = tgt_dict.unk()
        self.p = word_dropout if train else 0.0
        self.noise_sides = tuple(noise_sides)

    def __call__(self, samples):
        if not samples:
            return {}
        samples = sorted(samples, key=lambda s: len(s["source"]), reverse=True)
        src = [s["source"] for s in samples]
        tgt = [s["target"] for s in samples]
        prev = [torch.cat([t.new_tensor([self.eos]), t[:-1]]) for t in tgt]
        batch = {
            "id": torch.tensor([s["id"] for s in samples]),
            "nsentences": len(samples),
            "ntokens": sum(len(t) for t in tgt),
            "net_input": {
                "src_tokens": _pad_2d(src, self.pad, left_pad=True),
                "src_lengths": torch.tensor([len(s) for s in src]),
                "prev_output_tokens": _pad_2d(prev, self.pad),
            },
            "target": _pad_2d(tgt, self.pad),
        }
        for side in self.noise_sides:
            holder, key = _SIDE_HOLDER[side](batch), _SIDE_FIELD[side]
            holder[key] = word_dropout(holder[key], self.p, self.unk, (self.pad, self.eos))  # todoruleid: family 6 (missed)
        return batch


class TokenBucketSampler(Sampler):
    """Groups length-sorted examples into batches of at most ``max_tokens``."""

    def __init__(self, dataset: LanguagePairDataset, max_tokens: int, seed: int = 1, shuffle: bool = True):
        self.dataset = dataset
        self.max_tokens = max_tokens
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 1
        self.num_shards = get_world_size()
        self._batches = self._make_batches()

    def _make_batches(self) -> List[List[int]]:
        n = len(self.dataset)
        src_sizes, tgt_sizes = self.dataset.src_sizes[:n], self.dataset.tgt_sizes[:n]
        sizes = np.maximum(src_sizes, tgt_sizes)
        order = np.lexsort((src_sizes, sizes))
        batches, cur, cur_max = [], [], 0
        for idx in order:
            n = int(sizes[idx])
            if cur and max(cur_max, n) * (len(cur) + 1) > self.max_tokens:
                batches.append(cur)
                cur, cur_max = [], 0
            cur.append(int(idx))
            cur_max = max(cur_max, n)
        if cur:
            batches.append(cur)
        return batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch_batches(self) -> List[List[int]]:
        batches = list(self._batches)
        if self.shuffle:
            rng = np.random.default_rng(self.seed + self.epoch)  # ok: MLS301
            rng.shuffle(batches)
        usable = len(batches) - len(batches) % self.num_shards
        return batches[:usable]

    def __iter__(self) -> Iterator[List[int]]:
        yield from self._epoch_batches()[data_parallel_rank():: self.num_shards]  # todoruleid: family 6 (missed)

    def __len__(self):
        return len(self._batches) // self.num_shards


_WORKER_SEEDS = {
    "inherit": lambda wid: torch.initial_seed() % 2**32,
    "fresh": lambda wid: (time.time_ns() ^ (os.getpid() << 16)) % 2**32,
}


def make_worker_init(mode: str):
    seed_of = _WORKER_SEEDS[mode]

    def _init(worker_id: int) -> None:
        s = seed_of(worker_id)
        random.seed(s)  # ruleid: MLS301
        np.random.seed(s)  # ruleid: MLS301
        torch.manual_seed(s)  # ruleid: MLS301

    return _init


def build_dataloader(cfg, split, src_dict, tgt_dict, train=True):
    src, tgt = load_split(cfg.data, split, cfg.source_lang, cfg.target_lang, src_dict, tgt_dict, cfg.dataset_cache)
    dataset = LanguagePairDataset(src, tgt, src_dict, tgt_dict, cfg.max_source_positions, cfg.max_target_positions)
    sampler = TokenBucketSampler(dataset, cfg.max_tokens, seed=cfg.seed, shuffle=train)
    collater = Collater(src_dict, tgt_dict, cfg.word_dropout if train else 0.0, cfg.noise_sides, train=train)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collater,
        num_workers=cfg.num_workers,
        worker_init_fn=make_worker_init(cfg.worker_seed),
        pin_memory=True,
    )
    return dataset, sampler, loader
