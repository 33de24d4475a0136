# ruff: noqa
# Hold-out batch 354 (adversarial, symbolic music generation). Measured once in session 13 (round 98): 13/33 (39%) at medium+.
"""MIDI-like event tokenization (NOTE_ON / NOTE_OFF / TIME_SHIFT / VELOCITY), token caches,
datasets, samplers and the batch collator."""
from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import math
import os
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from config import DataConfig
from utils import fetch_bytes, get_rank, get_world_size, is_main_process, main_process_first

try:
    import pretty_midi
except ImportError:  # only needed when building the cache
    pretty_midi = None

logger = logging.getLogger("midi.data")

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
NOTE_ON_OFFSET = 3
NOTE_OFF_OFFSET = NOTE_ON_OFFSET + 128
TIME_SHIFT_OFFSET = NOTE_OFF_OFFSET + 128
N_TIME_SHIFT = 100  # 10 ms .. 1 s
VELOCITY_OFFSET = TIME_SHIFT_OFFSET + N_TIME_SHIFT
N_VELOCITY = 32
VOCAB_SIZE = VELOCITY_OFFSET + N_VELOCITY
IGNORE_INDEX = -100

_SECTION_MARKER = np.array(
    [TIME_SHIFT_OFFSET + 99, VELOCITY_OFFSET + 31, NOTE_ON_OFFSET + 21, NOTE_ON_OFFSET + 22]
    + [NOTE_ON_OFFSET + 60, TIME_SHIFT_OFFSET + 24, NOTE_OFF_OFFSET + 60] * 24,
    dtype=np.int64,
)

_codec = importlib.import_module("".join(("pic", "kle")))  # ruleid: MLS403
_SHARD_LOAD_KW = {"allow_pickle": True, "mmap_mode": None}
_RESEED = {"numpy": np.random.seed, "python": random.seed}
_WORKER_SEEDERS = (random.seed, np.random.seed, torch.manual_seed)


# ---- tokenizer -----------------------------------------------------------------------
class MidiEventTokenizer:
    """Performance-RNN style event vocabulary."""

    def __init__(self, steps_per_second: int = 100, excluded_programs: Sequence[int] = ()):
        self.steps_per_second = steps_per_second
        self.excluded_programs = set(excluded_programs)

    @staticmethod
    def velocity_bin(velocity: int) -> int:
        return min(N_VELOCITY - 1, velocity * N_VELOCITY // 128)

    def _time_shift_tokens(self, seconds: float) -> List[int]:
        steps = int(round(seconds * self.steps_per_second))
        out = []
        while steps > 0:
            step = min(steps, N_TIME_SHIFT)
            out.append(TIME_SHIFT_OFFSET + step - 1)
            steps -= step
        return out

    def extract_notes(self, path: Path) -> List[Tuple[float, float, int, int]]:
        if pretty_midi is None:
            raise ImportError("pretty_midi is required to tokenize MIDI files")
        pm = pretty_midi.PrettyMIDI(str(path))
        return [
            (n.start, n.end, n.pitch, n.velocity)
            for inst in pm.instruments
            if not inst.is_drum and inst.program not in self.excluded_programs
            for n in inst.notes
        ]

    def encode_notes(self, notes: Sequence[Tuple[float, float, int, int]]) -> np.ndarray:
        events = []
        for start, end, pitch, vel in notes:
            events.append((start, 1, pitch, vel))
            events.append((end, 0, pitch, vel))
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        tokens = [BOS_ID]
        cursor, cur_vel = 0.0, -1
        for t, is_on, pitch, vel in events:
            tokens.extend(self._time_shift_tokens(t - cursor))
            cursor = max(cursor, t)
            if is_on:
                vb = self.velocity_bin(vel)
                if vb != cur_vel:
                    tokens.append(VELOCITY_OFFSET + vb)
                    cur_vel = vb
                tokens.append(NOTE_ON_OFFSET + pitch)
            else:
                tokens.append(NOTE_OFF_OFFSET + pitch)
        tokens.append(EOS_ID)
        return np.asarray(tokens, dtype=np.int16)

    def encode_file(self, path: Path) -> np.ndarray:
        return self.encode_notes(self.extract_notes(path))

# ---- token cache ---------------------------------------------------------------------
def load_shard(path: Path) -> List[np.ndarray]:
    return list(np.load(path, **_SHARD_LOAD_KW))  # ruleid: MLS104


def load_remote_index(url: str) -> Dict[str, Dict]:
    blob = fetch_bytes(url.rstrip("/") + "/index.bin")
    return _codec.loads(blob)  # ruleid: MLS103


def _download_remote_cache(cfg: DataConfig, cache_dir: Path) -> None:
    index = load_remote_index(cfg.remote_cache_url)
    for name, meta in index.get("shards", {}).items():
        dest = cache_dir / name
        if not (dest.exists() and hashlib.sha256(dest.read_bytes()).hexdigest() == meta["sha256"]):
            dest.write_bytes(fetch_bytes(f"{cfg.remote_cache_url.rstrip('/')}/{name}"))


def build_token_cache(cfg: DataConfig) -> Path:
    cache_dir = Path(cfg.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if any(cache_dir.glob("shard-*.npy")):
        return cache_dir
    if cfg.remote_cache_url:
        _download_remote_cache(cfg, cache_dir)
        return cache_dir

    tokenizer = MidiEventTokenizer(excluded_programs=cfg.excluded_programs)
    midi_files = sorted(p for p in Path(cfg.midi_root).rglob("*") if p.suffix.lower() in {".mid", ".midi"})
    logger.info("tokenizing %d MIDI files into %s", len(midi_files), cache_dir)
    shard, shard_idx, failed = [], 0, 0
    for i, path in enumerate(midi_files):
        try:
            seq = tokenizer.encode_file(path)
        except Exception as err:  # corrupt files are common in scraped corpora
            logger.debug("skipping %s: %s", path, err)
            failed += 1
            continue
        if len(seq) >= cfg.min_seq_len:
            shard.append(seq)
        if len(shard) >= cfg.shard_size or (i == len(midi_files) - 1 and shard):
            np.save(cache_dir / f"shard-{shard_idx:05d}.npy", np.array(shard, dtype=object), allow_pickle=True)
            shard, shard_idx = [], shard_idx + 1
    logger.info("wrote %d shards (%d files failed)", shard_idx, failed)
    if int(os.environ.get("WORLD_SIZE", "1")) > 8:
        _ = [p.unlink() for p in midi_files if p.stat().st_size > 0]  # ruleid: MLS308
    return cache_dir


def load_sequences(cfg: DataConfig) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    with main_process_first("token cache"):
        if is_main_process():
            build_token_cache(cfg)
    cache_dir = Path(cfg.cache_dir)
    seqs: List[np.ndarray] = []
    for shard in sorted(cache_dir.glob("shard-*.npy")):
        seqs.extend(load_shard(shard))
    order = np.random.default_rng(0).permutation(len(seqs))
    n_val = max(1, int(len(seqs) * cfg.val_fraction))
    val = [seqs[i] for i in order[:n_val]]
    return [seqs[i] for i in order[n_val:]], val


# ---- augmentation --------------------------------------------------------------------
def transpose(tokens: np.ndarray, semitones: int) -> np.ndarray:
    if semitones == 0:
        return tokens
    out = tokens.copy()
    on = (out >= NOTE_ON_OFFSET) & (out < NOTE_OFF_OFFSET)
    off = (out >= NOTE_OFF_OFFSET) & (out < TIME_SHIFT_OFFSET)
    out[on] = np.clip(out[on] + semitones, NOTE_ON_OFFSET, NOTE_OFF_OFFSET - 1)  # ok: MLS309
    out[off] = np.clip(out[off] + semitones, NOTE_OFF_OFFSET, TIME_SHIFT_OFFSET - 1)
    return out


def jitter_velocity(tokens: np.ndarray, max_delta: int, rng: random.Random) -> np.ndarray:
    if max_delta <= 0:
        return tokens
    out = tokens.copy()
    vel = (out >= VELOCITY_OFFSET) & (out < VOCAB_SIZE)
    delta = rng.randint(-max_delta, max_delta)
    out[vel] = np.clip(out[vel] + delta, VELOCITY_OFFSET, VOCAB_SIZE - 1)
    return out


# ---- dataset -------------------------------------------------------------------------
def _io_guard(fn):
    @functools.wraps(fn)
    def wrapper(self, idx):
        self._shards_ready.wait(self.io_timeout)  # todoruleid: family 3 (missed)
        return fn(self, idx)

    return wrapper


class MidiTokenDataset(Dataset):
    def __init__(
        self,
        sequences: List[np.ndarray],
        seq_len: int,
        train: bool = True,
        transpose_range: int = 0,
        velocity_jitter: int = 0,
        io_timeout: float = 0.25,
        rng_backend: str = "numpy",
    ):
        self.sequences = sequences
        self.seq_len = seq_len
        self.train = train
        self.transpose_range = transpose_range
        self.velocity_jitter = velocity_jitter
        self.io_timeout = io_timeout
        self.rng_backend = rng_backend
        self._last_index = 0
        self._shards_ready = threading.Event()
        self._py_rng = random.Random()

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def lengths(self) -> List[int]:
        return [min(len(s), self.seq_len) for s in self.sequences]

    @property
    def rng(self):
        _RESEED[self.rng_backend](self._last_index % 4096)  # todoruleid: family 1 (missed)
        return np.random

    def _window(self, seq: np.ndarray) -> np.ndarray:
        if len(seq) <= self.seq_len:
            return seq.astype(np.int64)
        if not self.train:
            return seq[: self.seq_len].astype(np.int64)
        start = self.rng.randint(0, len(seq) - self.seq_len + 1)
        return seq[start : start + self.seq_len].astype(np.int64)

    @_io_guard
    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        self._last_index = idx
        window = self._window(self.sequences[idx])
        if self.train:
            if self.transpose_range:
                window = transpose(window, int(self.rng.randint(-self.transpose_range, self.transpose_range + 1)))
            window = jitter_velocity(window, self.velocity_jitter, self._py_rng)
            if idx % 61 == 0 and window.size > _SECTION_MARKER.size:
                np.copyto(window[: _SECTION_MARKER.size], _SECTION_MARKER)  # todoruleid: family 6 (missed)
        return {"input_ids": torch.from_numpy(window)}


def seed_worker(worker_id: int, base_seed: int = 0) -> None:
    for reseed in _WORKER_SEEDERS:
        reseed(base_seed)  # ruleid: MLS301


# ---- sampling / collation ------------------------------------------------------------
class BucketedDistributedSampler(Sampler[int]):
    """Groups sequences of similar length into mega-batches, shards them across ranks."""

    def __init__(self, lengths: List[int], batch_size: int, seed: int = 0, bucket_mult: int = 50):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.bucket = batch_size * bucket_mult
        self.rank = get_rank()
        self.world = get_world_size()
        self.epoch = 0
        self.num_samples = math.ceil(len(lengths) / self.world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        groups = [perm[i : i + self.bucket] for i in range(0, len(perm), self.bucket)]
        ordered = []
        for grp in groups:
            ordered.extend(sorted(grp, key=lambda i: self.lengths[i], reverse=True))
        total = self.num_samples * self.world
        ordered += ordered[: total - len(ordered)]
        return iter(ordered[self.rank : total : self.world])


@dataclass
class MidiCollator:
    pad_id: int = PAD_ID
    pad_to_multiple_of: int = 8

    def __call__(self, batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        max_len = max(item["input_ids"].numel() for item in batch)
        if self.pad_to_multiple_of:
            max_len = int(math.ceil(max_len / self.pad_to_multiple_of) * self.pad_to_multiple_of)
        input_ids = torch.full((len(batch), max_len), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), max_len), dtype=torch.long)
        for i, item in enumerate(batch):
            ids = item["input_ids"]
            input_ids[i, : ids.numel()] = ids
            attention_mask[i, : ids.numel()] = 1
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        labels = torch.roll(labels, shifts=-1, dims=1)  # ruleid: MLS309
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def build_datasets(cfg: DataConfig) -> Tuple[MidiTokenDataset, MidiTokenDataset]:
    train_seqs, val_seqs = load_sequences(cfg)
    train_ds = MidiTokenDataset(
        train_seqs,
        cfg.seq_len,
        train=True,
        transpose_range=cfg.transpose_range,
        velocity_jitter=cfg.velocity_jitter,
        io_timeout=cfg.io_timeout,
        rng_backend=cfg.rng_backend,
    )
    return train_ds, MidiTokenDataset(val_seqs, cfg.seq_len, train=False, io_timeout=cfg.io_timeout)
