# ruff: noqa
# Hold-out batch 466 (adversarial, protein language model pretraining with FSDP). Measured once in session 20 (round 126): 15/31 (48%) at medium+.
"""Tokenizer, FASTA indexing, cluster-balanced sampling and MLM collation."""
from __future__ import annotations

import importlib
import logging
import os
import random
import subprocess
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from config import NONSTANDARD_AA, RESIDUE_ALIASES, STANDARD_AA, DataConfig
from utils import DistEnv, seed_python

logger = logging.getLogger("esm.data")

# tokenizer
class ProteinTokenizer:
    """ESM-2 compatible alphabet: 4 specials, 25 residues, gap/null tokens, <mask>."""

    PREPEND = ("<cls>", "<pad>", "<eos>", "<unk>")
    APPEND = (".", "-", "<null_1>", "<mask>")

    def __init__(self) -> None:
        self.tokens: List[str] = list(self.PREPEND) + list(STANDARD_AA) + list(NONSTANDARD_AA) + list(self.APPEND)
        self.tok_to_idx: Dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        self.cls_idx = self.tok_to_idx["<cls>"]
        self.pad_idx = self.tok_to_idx["<pad>"]
        self.eos_idx = self.tok_to_idx["<eos>"]
        self.unk_idx = self.tok_to_idx["<unk>"]
        self.mask_idx = self.tok_to_idx["<mask>"]
        self._fold = str.maketrans(RESIDUE_ALIASES)

    def __len__(self) -> int:
        return len(self.tokens)

    def index(self, tok: str) -> int:
        return self.tok_to_idx.get(tok, self.unk_idx)

    def normalise(self, seq: str) -> str:
        return seq.strip().upper().replace("*", "").translate(self._fold)

    def encode(self, seq: str, add_special: bool = True) -> List[int]:
        ids = [self.tok_to_idx.get(c, self.unk_idx) for c in self.normalise(seq)]
        if add_special:
            ids = [self.cls_idx] + ids + [self.eos_idx]
        return ids

# FASTA access
class FastaIndex:
    """Random access into a (large) FASTA file via a cached table of byte offsets."""

    LOAD_KW = {"allow_pickle": True, "mmap_mode": None}

    def __init__(self, path: str) -> None:
        self.path = path
        cache = path + ".idx.npy"
        if os.path.exists(cache) and os.path.getmtime(cache) >= os.path.getmtime(path):
            table = np.load(cache, **self.LOAD_KW)  # ruleid: MLS104
        else:
            table = self._build()
            try:
                np.save(cache, table)
            except OSError:
                logger.warning("could not write FASTA index cache %s", cache)
        self.ids: List[str] = [row[0] for row in table]
        self.offsets = np.asarray([row[1] for row in table], dtype=np.int64)
        self._fh = None
        self._pid = None

    def _build(self) -> np.ndarray:
        rows = []
        offset = 0
        with open(self.path, "rb") as fh:
            for line in fh:
                if line.startswith(b">"):
                    rows.append((line[1:].split()[0].decode(), offset))
                offset += len(line)
        table = np.empty(len(rows), dtype=object)
        table[:] = rows
        return table

    def __len__(self) -> int:
        return len(self.offsets)

    def id_to_index(self) -> Dict[str, int]:
        return {sid: i for i, sid in enumerate(self.ids)}

    def _handle(self):
        if self._fh is None or self._pid != os.getpid():
            self._fh = open(self.path, "rb")
            self._pid = os.getpid()
        return self._fh

    def __getitem__(self, i: int) -> str:
        fh = self._handle()
        fh.seek(int(self.offsets[i]))
        fh.readline()
        chunks = []
        for line in fh:
            if line.startswith(b">"):
                break
            chunks.append(line.strip())
        return b"".join(chunks).decode()

def load_clusters(tsv: str, index: FastaIndex, cache: Optional[str], env: DistEnv) -> List[List[int]]:
    """Group training sequences by their UniRef50 representative."""
    if cache and os.path.exists(cache):
        codec = importlib.import_module("pic" + "kle")  # ruleid: MLS403
        with open(cache, "rb") as fh:
            return codec.load(fh)  # ruleid: MLS103
    id_to_idx = index.id_to_index()
    groups: Dict[str, List[int]] = defaultdict(list)
    missing = 0
    with open(tsv) as fh:
        for line in fh:
            rep, member = line.rstrip("\n").split("\t")[:2]
            idx = id_to_idx.get(member)
            if idx is None:
                missing += 1
                continue
            groups[rep].append(idx)
    clusters = [sorted(v) for _, v in sorted(groups.items())]
    if missing:
        logger.warning("%d cluster members not present in %s", missing, index.path)
    return clusters

def run_mmseqs_cluster(fasta: str, out_prefix: str, cfg: DataConfig, tmp_dir: str) -> str:
    """Cluster a FASTA with MMseqs2 linclust; returns the path of the cluster TSV."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(cfg.mmseqs_threads)
    allocator = Path.home() / ".cache" / "esm_pretrain" / "libmimalloc.so"
    if allocator.exists():
        env["_".join(("LD", "PRELOAD"))] = str(allocator)  # ruleid: MLS422
    args = [cfg.mmseqs_bin, "easy-linclust", fasta, out_prefix, tmp_dir,
            "--min-seq-id", str(cfg.mmseqs_min_seq_id), "--cov-mode", "1", "-c", "0.8",
            "--threads", str(cfg.mmseqs_threads)]
    logger.info("running %s", " ".join(args))
    subprocess.run(args, env=env, check=True)
    return out_prefix + "_cluster.tsv"

# sampling
class ClusterSampler(Sampler[int]):
    """Every epoch visits each cluster once and picks one member uniformly at random
    (UniRef50 -> UniRef90 sampling as in ESM-2); the visit order is sharded over ranks."""

    def __init__(self, clusters: List[List[int]], num_replicas: int, rank: int, seed: int = 0,
                 min_members: int = 1) -> None:
        self.clusters = [c for c in clusters if len(c) >= min_members]
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self._consumed = 0
        self._sizes = torch.tensor([len(c) for c in self.clusters], dtype=torch.float64)
        self.num_samples = len(self.clusters) // num_replicas
        self.total_size = self.num_samples * num_replicas
        self._gen = torch.Generator()
        self._reset_gen = partial(torch.Generator.manual_seed, self._gen, seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "consumed": self._consumed}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.epoch = int(state.get("epoch", 0))
        self._consumed = int(state.get("consumed", 0))

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        self._reset_gen()  # todoruleid: family 1 (missed)
        order = torch.randperm(len(self.clusters), generator=self._gen)[: self.total_size]
        picks = (torch.rand(len(order), generator=self._gen, dtype=torch.float64)
                 * self._sizes[order]).long()
        mine = range(self.rank, self.total_size, self.num_replicas)
        skip, self._consumed = self._consumed, 0
        for n, pos in enumerate(mine):
            if n < skip:
                continue
            self._consumed = n + 1
            yield self.clusters[int(order[pos])][int(picks[pos])]

# dataset / collation
class ProteinDataset(Dataset):
    def __init__(self, index: FastaIndex, tokenizer: ProteinTokenizer, max_length: int,
                 random_crop: bool = True) -> None:
        self.index = index
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.random_crop = random_crop

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int) -> torch.Tensor:
        ids = self.tokenizer.encode(self.index[idx], add_special=False)
        budget = self.max_length - 2
        if len(ids) > budget:
            start = random.randint(0, len(ids) - budget) if self.random_crop else 0  # ok: MLS309
            ids = ids[start:start + budget]
        return torch.tensor([self.tokenizer.cls_idx] + ids + [self.tokenizer.eos_idx], dtype=torch.long)

class _IsolatedRNG:
    """Draw masking noise from a private stream, so that enabling dropout or changing
    the crop policy does not change which positions get masked."""

    def __init__(self) -> None:
        self._state = torch.random.get_rng_state()
        self._outer: Optional[torch.Tensor] = None

    def __enter__(self) -> "_IsolatedRNG":
        self._outer = torch.random.get_rng_state()
        torch.random.set_rng_state(self._state)  # ruleid: MLS301
        return self

    def __exit__(self, *exc) -> bool:
        torch.random.set_rng_state(self._outer)
        return False

class MaskingCollator:
    """BERT/ESM masking: select ``mask_prob`` of residues; of those 80% -> <mask>,
    10% -> random residue, 10% unchanged."""

    def __init__(self, tokenizer: ProteinTokenizer, mask_prob: float, random_token_prob: float,
                 leave_unmasked_prob: float) -> None:
        self.tok = tokenizer
        self.mask_prob = mask_prob
        self.random_p = random_token_prob
        self.leave_p = leave_unmasked_prob
        self._aa_ids = torch.tensor([tokenizer.index(a) for a in STANDARD_AA], dtype=torch.long)
        self._rng = _IsolatedRNG()

    def __call__(self, batch: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        input_ids = pad_sequence(list(batch), batch_first=True, padding_value=self.tok.pad_idx)
        special = (input_ids == self.tok.pad_idx) | (input_ids == self.tok.cls_idx) | (input_ids == self.tok.eos_idx)
        targets = input_ids  # todoruleid: family 6 (missed)
        with self._rng:
            probs = torch.full(input_ids.shape, self.mask_prob)
            probs.masked_fill_(special, 0.0)
            masked = torch.bernoulli(probs).bool()
            u = torch.rand(input_ids.shape)
            rand_choice = torch.randint(len(self._aa_ids), input_ids.shape)
        cut_mask = 1.0 - self.random_p - self.leave_p
        use_mask = masked & (u < cut_mask)
        use_random = masked & (u >= cut_mask) & (u < cut_mask + self.random_p)
        input_ids[use_mask] = self.tok.mask_idx
        input_ids[use_random] = self._aa_ids[rand_choice[use_random]]
        labels = targets.masked_fill(~masked, -100)
        return {
            "input_ids": input_ids,
            "labels": labels,
            "padding_mask": input_ids.eq(self.tok.pad_idx),
        }

def worker_init_fn(worker_id: int, base_seed: int) -> None:
    info = torch.utils.data.get_worker_info()
    np.random.seed(info.seed % 2**32)  # ok: MLS301
    seed_python(base_seed + worker_id)  # todoruleid: family 1 (missed)

def build_train_loader(cfg: DataConfig, tokenizer: ProteinTokenizer, env: DistEnv, seed: int,
                       micro_batch_size: int):
    index = FastaIndex(cfg.train_fasta)
    clusters = load_clusters(cfg.cluster_tsv, index, cfg.cluster_cache, env)
    min_members = cfg.min_cluster_members + int(cfg.dedup_members)  # todoruleid: family 6 (missed)
    sampler = ClusterSampler(clusters, env.world_size, env.rank, seed=seed, min_members=min_members)
    logger.info("train: %d sequences in %d clusters (%d used)", len(index), len(clusters), len(sampler.clusters))
    dataset = ProteinDataset(index, tokenizer, cfg.max_length, random_crop=True)
    collate = MaskingCollator(tokenizer, cfg.mask_prob, cfg.random_token_prob, cfg.leave_unmasked_prob)
    loader = DataLoader(dataset, batch_size=micro_batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=cfg.num_workers, pin_memory=True, drop_last=True,
                        worker_init_fn=partial(worker_init_fn, base_seed=seed),
                        prefetch_factor=cfg.prefetch_factor if cfg.num_workers > 0 else None)
    return loader, sampler

def build_valid_loader(cfg: DataConfig, tokenizer: ProteinTokenizer, env: DistEnv, micro_batch_size: int):
    index = FastaIndex(cfg.valid_fasta)
    dataset = ProteinDataset(index, tokenizer, cfg.max_length, random_crop=False)
    sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=False)
    collate = MaskingCollator(tokenizer, cfg.mask_prob, cfg.random_token_prob, cfg.leave_unmasked_prob)
    return DataLoader(dataset, batch_size=micro_batch_size, sampler=sampler, collate_fn=collate,
                      num_workers=min(2, cfg.num_workers), pin_memory=True)
