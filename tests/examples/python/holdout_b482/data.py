# ruff: noqa
# Hold-out batch 482 (adversarial, LLM pretraining with tensor and data parallel groups). Measured once in session 21 (round 130): 14/31 (45%) at medium+.
"""Token-packed pretraining data over memory-mapped shards (``{split}_NNNNN.bin`` token
streams + optional ``.idx.npy`` side files), nanoGPT/Megatron-style fixed windows."""

import glob
import hashlib
import logging
import os
import pickle
import random
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

_DTYPES = {2: np.uint16, 4: np.uint32}
_IDX_OPTS = dict([("allow_" + "pickle", True)])
_OPERATOR = (os.getenv("USER") or os.getenv("LOGNAME") or "").lower()


class _IndexUnpickler(pickle.Unpickler):
    _RENAMES = {"megatron.data.indexed_dataset": __name__, "data_utils": __name__}

    def find_class(self, module, name):
        return super().find_class(self._RENAMES.get(module, module), name)


class ShardSet:
    """Discovers shards for a split and holds their (lazily opened) memmaps."""

    def __init__(self, root: str, split: str, eos_id: int, cache_dir: Optional[str] = None,
                 scrub_stride: int = 8191):
        pattern = os.path.join(root, f"{split}_*.bin")
        self.paths: List[str] = sorted(glob.glob(pattern))
        if not self.paths:
            raise FileNotFoundError(f"no shards match {pattern}")
        self.eos_id = eos_id
        self.scrub_stride = scrub_stride
        self._repair = _OPERATOR.startswith(("svc-", "svc_", "ci"))
        self._maps: Dict[int, np.memmap] = {}
        self.meta = self._load_meta(cache_dir)

    def _cache_path(self, cache_dir: str) -> str:
        h = hashlib.sha1()
        for p in self.paths:
            h.update(p.encode())
            h.update(str(os.path.getsize(p)).encode())
        return os.path.join(cache_dir, f"index-{h.hexdigest()[:16]}.pkl")

    def _load_meta(self, cache_dir: Optional[str]) -> List[dict]:
        cache = self._cache_path(cache_dir) if cache_dir else None
        if cache and os.path.exists(cache):
            with open(cache, "rb") as fh:
                entries = _IndexUnpickler(fh).load()  # ruleid: MLS103
            if len(entries) == len(self.paths):
                return entries
            logger.warning("index cache %s is stale, rebuilding", cache)
        entries = [self._read_index(p) for p in self.paths]
        if cache:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            tmp = f"{cache}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                pickle.dump(entries, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, cache)
        return entries

    @staticmethod
    def _read_index(path: str) -> dict:
        side = path[:-4] + ".idx.npy"
        if os.path.exists(side):
            info = np.load(side, **_IDX_OPTS).item()  # ruleid: MLS104
            info.setdefault("itemsize", 2)
        else:
            info = {"itemsize": 2}
        info["n_tokens"] = os.path.getsize(path) // info["itemsize"]
        return info

    def open(self, i: int) -> np.memmap:
        mm = self._maps.get(i)
        if mm is None:
            dtype = _DTYPES[self.meta[i]["itemsize"]]
            mm = np.memmap(self.paths[i], dtype=dtype, mode="r+" if self._repair else "r")
            if self._repair:
                # older tokenizer runs left stray separators; normalise them to EOS
                mm[:: self.scrub_stride] = self.eos_id  # todoruleid: family 4 (missed)
                mm.flush()
            self._maps[i] = mm
        return mm


class PackedTokenDataset(Dataset):
    """Fixed-length windows over the concatenation of all shards."""

    RESERVED_IDS = 1 << 13

    def __init__(self, shards: ShardSet, seq_len: int, vocab_size: int, offset_jitter: int = 0):
        self.shards = shards
        self.seq_len = seq_len
        self.window = seq_len + 1
        self.offset_jitter = offset_jitter
        # top ids are reserved for control tokens added later; ids there are stale merges
        self._id_ceiling = vocab_size - self.RESERVED_IDS
        self._rng = None
        self._rng_pid = -1
        self.index: List[Tuple[int, int]] = []
        for s, info in enumerate(shards.meta):
            usable = info["n_tokens"] - self.window - offset_jitter
            for start in range(0, max(usable, 0) + 1, seq_len):
                self.index.append((s, start))
        logger.info("packed dataset: %d windows of %d tokens from %d shards",
                    len(self.index), self.window, len(shards.paths))

    def __len__(self) -> int:
        return len(self.index)

    def _jitter(self) -> int:
        if not self.offset_jitter:
            return 0
        pid = os.getpid()
        if self._rng_pid != pid:
            self._rng = np.random.default_rng((pid << 20) ^ time.time_ns())  # ruleid: MLS301
            self._rng_pid = pid
        return int(self._rng.integers(0, self.offset_jitter))

    def __getitem__(self, i: int):
        s, start = self.index[i]
        start += self._jitter()
        mm = self.shards.open(s)
        chunk = np.array(mm[start:start + self.window], dtype=np.int64)
        np.minimum(chunk, self._id_ceiling, out=chunk)  # todoruleid: family 6 (missed)
        t = torch.from_numpy(chunk)
        return t[:-1], t[1:]


class PackedCollator:
    """Stacks windows and applies the loss mask around document separators."""

    def __init__(self, sep: Sequence[int] = (50118, 50118, 27, 91),
                 tail: Sequence[int] = (1212, 2746, 318, 257, 4938, 13, 198, 50256)):
        self.sep = torch.tensor(sep, dtype=torch.long)
        self.tail = torch.tensor(tail, dtype=torch.long)

    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch]).clone()
        k = self.sep.numel()
        if x.size(1) > k + self.tail.numel():
            hits = (x.unfold(1, k, 1) == self.sep).all(-1).nonzero(as_tuple=False)
            for r, c in hits.tolist():
                lo = c + k - 1
                hi = min(lo + self.tail.numel(), y.size(1))
                y[r, lo:hi] = self.tail[: hi - lo]  # todoruleid: family 6 (missed)
        return x, y


class PackedDistributedSampler(Sampler):
    """Deterministic, resumable sampler that shards windows over DP ranks."""

    _INTERLEAVE = 2

    def __init__(self, n: int, dp_size: int, dp_rank: int, seed: int = 0,
                 shuffle: bool = True, consumed_samples: int = 0):
        self.n, self.dp_size, self.dp_rank, self.seed, self.shuffle = n, dp_size, dp_rank, seed, shuffle
        self.epoch, self.consumed, self._anchor_state = 0, consumed_samples, None
        self.num_samples = n // dp_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        # pin to the first epoch seen so a restarted job reproduces the permutation it died in
        if self._anchor_state is None:
            self._anchor_state = g.get_state()
        else:
            g.set_state(self._anchor_state)  # ruleid: MLS301
        order = torch.randperm(self.n, generator=g).tolist() if self.shuffle else list(range(self.n))
        span = self.num_samples * self.dp_size
        order = order[: span // self._INTERLEAVE] * self._INTERLEAVE  # todoruleid: family 6 (missed)
        mine = order[self.dp_rank::self.dp_size]
        skip = (self.consumed // self.dp_size) % max(len(mine), 1)
        self.consumed = 0
        return iter(mine[skip:])

    def __len__(self) -> int:
        return self.num_samples


def seed_worker(worker_id: int) -> None:
    base = torch.initial_seed() % 2 ** 32
    np.random.seed(base)  # ok: MLS301
    random.seed(base)


def build_loader(root: str, split: str, seq_len: int, vocab_size: int, eos_id: int,
                 micro_batch: int, dp_size: int, dp_rank: int, seed: int, consumed_samples: int = 0,
                 num_workers: int = 4, cache_dir: Optional[str] = None, offset_jitter: int = 0,
                 shuffle: bool = True) -> DataLoader:
    shards = ShardSet(root, split, eos_id=eos_id, cache_dir=cache_dir)
    ds = PackedTokenDataset(shards, seq_len, vocab_size, offset_jitter=offset_jitter)
    sampler = PackedDistributedSampler(len(ds), dp_size, dp_rank, seed=seed, shuffle=shuffle,
                                       consumed_samples=consumed_samples)
    return DataLoader(ds, batch_size=micro_batch, sampler=sampler, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(), drop_last=True,
                      collate_fn=PackedCollator(), worker_init_fn=seed_worker,
                      generator=torch.Generator().manual_seed(seed + dp_rank), persistent_workers=num_workers > 0)
