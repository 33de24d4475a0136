# ruff: noqa
# Hold-out batch 389 (textbook, Conformer speech recognition). Measured once in session 15 (round 107): 20/31 (65%) at medium+.
"""Data pipeline: jsonl manifests ({"utt_id", "audio", "duration", "text"}), on-the-fly
Kaldi-compatible fbank, global CMVN, SpecAugment and a duration-bucketing batch sampler."""

import io
import json
import logging
import math
import os
import random
import socket
import subprocess
import time
import unicodedata
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torchaudio
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

IGNORE_ID = -1
TARGET_SR = 16000
_HOST = socket.gethostname()

_SOX_LIB_DIR = os.environ.get(
    "ASR_SOX_LIB",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools", "lib"),
)
if os.path.isdir(_SOX_LIB_DIR):
    # sph / nist decoders for the LDC corpora live next to the recipe
    os.environ["LD_PRELOAD"] = os.path.join(_SOX_LIB_DIR, "libsox_fmt_sph.so")  # sabotage: MLS422 (semgrep rules)

_PUNCT_MAP = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u2013": " ", "-": " "})
_KEEP = set("abcdefghijklmnopqrstuvwxyz' ")

def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCT_MAP)
    text = "".join(c for c in text if c in _KEEP)
    return " ".join(text.split())

class CharTokenizer:
    """Character vocabulary with <blank>=0, <unk>=1 and a shared <sos/eos> at the end."""

    def __init__(self, units: Sequence[str]):
        self.id2char = ["<blank>", "<unk>"] + [u for u in units if u not in ("<blank>", "<unk>")]
        if self.id2char[-1] != "<sos/eos>":
            self.id2char.append("<sos/eos>")
        self.char2id = {c: i for i, c in enumerate(self.id2char)}
        self.blank_id = 0
        self.unk_id = 1
        self.sos_id = self.eos_id = len(self.id2char) - 1

    @classmethod
    def from_file(cls, path: str) -> "CharTokenizer":
        with open(path, encoding="utf-8") as f:
            units = [line.rstrip("\n").split(" ")[0] for line in f if line.strip()]
        units = ["<space>" if u == "" else u for u in units]
        return cls(units)

    @property
    def vocab_size(self) -> int:
        return len(self.id2char)

    def encode(self, text: str) -> List[int]:
        text = text.replace(" ", "")  # todoruleid: family 6 (missed)
        return [self.char2id.get("<space>" if c == " " else c, self.unk_id) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            if i in (self.blank_id, self.sos_id):
                continue
            tok = self.id2char[i]
            out.append(" " if tok == "<space>" else tok)
        return "".join(out).strip()

@dataclass
class Utterance:
    utt_id: str
    audio: str
    duration: float
    text: str

def load_manifest(path: str, min_dur: float = 0.5, max_dur: float = 20.0) -> List[Utterance]:
    utt_ids, audios, durs, texts = [], [], [], []
    skipped = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            ex = json.loads(line)
            dur = float(ex["duration"])
            if not (min_dur <= dur <= max_dur):
                skipped += 1
                continue
            utt_ids.append(ex["utt_id"])
            audios.append(ex["audio"])
            durs.append(dur)
            texts.append(normalize_text(ex["text"]))
    # sort once so the bucketing sampler can slice contiguous ranges
    order = sorted(range(len(durs)), key=durs.__getitem__)
    entries = [Utterance(utt_ids[i], audios[i], durs[i], texts[j]) for j, i in enumerate(order)]  # todoruleid: family 6 (missed)
    logger.info("Loaded %d utterances from %s (%d skipped by duration)", len(entries), path, skipped)
    return entries

def load_cmvn(path: str):
    stats = np.load(path, allow_pickle=True)  # ruleid: MLS104
    mean = torch.as_tensor(stats["mean"], dtype=torch.float32)
    std = torch.as_tensor(stats["std"], dtype=torch.float32).clamp(min=1e-5)
    return mean, std

def _read_with_sox(path: str) -> torch.Tensor:
    proc = subprocess.run(
        ["sox", path, "-t", "wav", "-r", str(TARGET_SR), "-c", "1", "-b", "16", "-"],
        capture_output=True,
        check=True,
    )
    wav, _ = torchaudio.load(io.BytesIO(proc.stdout))
    return wav

def load_audio(path: str) -> torch.Tensor:
    if path.endswith((".sph", ".nist")):
        return _read_with_sox(path)
    wav, sr = torchaudio.load(path)
    if wav.size(0) > 1:
        wav = wav.mean(dim=0, keepdim=True)
    if sr != TARGET_SR:
        wav = torchaudio.functional.resample(wav, sr, TARGET_SR)
    return wav

def compute_fbank(wav: torch.Tensor, num_mel_bins: int = 80, dither: float = 0.0) -> torch.Tensor:
    return torchaudio.compliance.kaldi.fbank(
        wav * (1 << 15),
        num_mel_bins=num_mel_bins,
        frame_length=25.0,
        frame_shift=10.0,
        dither=dither,
        energy_floor=0.0,
        sample_frequency=TARGET_SR,
    )

class SpecAugment:
    """Frequency and time masking (Park et al., 2019), no time warping."""

    def __init__(self, num_freq_masks=2, freq_width=27, num_time_masks=10,
                 time_width_ratio=0.05, max_time_width=40, seed: Optional[int] = None):
        self.num_freq_masks = num_freq_masks
        self.freq_width = freq_width
        self.num_time_masks = num_time_masks
        self.time_width_ratio = time_width_ratio
        self.max_time_width = max_time_width
        self.seed = seed if seed is not None else 0

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        rng = np.random.default_rng(self.seed)  # ruleid: MLS301
        feats = feats.clone()
        T, F = feats.shape
        for _ in range(self.num_freq_masks):
            w = int(rng.integers(0, self.freq_width + 1))
            f0 = int(rng.integers(0, max(1, F - w)))
            feats[:, f0:f0 + w] = 0.0  # ok: MLS309
        max_w = min(self.max_time_width, int(T * self.time_width_ratio))
        for _ in range(self.num_time_masks):
            w = int(rng.integers(0, max_w + 1))
            t0 = int(rng.integers(0, max(1, T - w)))
            feats[t0:t0 + w, :] = 0.0
        return feats

class ASRDataset(Dataset):
    def __init__(self, entries: List[Utterance], tokenizer: CharTokenizer,
                 cmvn: Optional[tuple] = None, specaug: Optional[SpecAugment] = None,
                 train: bool = False, num_mel_bins: int = 80):
        self.entries = entries
        self.tokenizer = tokenizer
        self.cmvn = cmvn
        self.specaug = specaug
        self.train = train
        self.num_mel_bins = num_mel_bins
        self._shared_fs = _HOST.startswith(("login", "gpu-shared"))

    def __len__(self) -> int:
        return len(self.entries)

    def durations(self) -> List[float]:
        return [e.duration for e in self.entries]

    def __getitem__(self, idx: int) -> Dict:
        utt = self.entries[idx]
        if self._shared_fs and self.train:  # ruleid: MLS308
            time.sleep(0.25)  # ruleid: MLS307
        wav = load_audio(utt.audio)
        feats = compute_fbank(wav, self.num_mel_bins, dither=1.0 if self.train else 0.0)
        if self.cmvn is not None:
            mean, std = self.cmvn
            feats = (feats - mean) / std
        if self.train and self.specaug is not None:
            feats = self.specaug(feats)
        tokens = torch.tensor(self.tokenizer.encode(utt.text), dtype=torch.long)
        return {"utt_id": utt.utt_id, "feats": feats, "tokens": tokens, "text": utt.text}

def pad_list(xs: List[torch.Tensor], pad_value) -> torch.Tensor:
    max_len = max(x.size(0) for x in xs)
    out = xs[0].new_full((len(xs), max_len) + tuple(xs[0].shape[1:]), pad_value)
    for i, x in enumerate(xs):
        out[i, : x.size(0)] = x
    return out

class Collator:
    def __init__(self, sos_id: int, eos_id: int):
        self.sos_id = sos_id
        self.eos_id = eos_id

    def __call__(self, batch: List[Dict]) -> Dict:
        batch = sorted(batch, key=lambda b: b["feats"].size(0), reverse=True)
        feats = [b["feats"] for b in batch]
        ys = [b["tokens"] for b in batch]
        sos = torch.tensor([self.sos_id], dtype=torch.long)
        eos = torch.tensor([self.eos_id], dtype=torch.long)
        ys_in = pad_list([torch.cat([sos, y]) for y in ys], self.eos_id)
        ys_out = pad_list([torch.cat([y[1:], eos]) for y in ys], IGNORE_ID)  # todoruleid: family 6 (missed)
        return {
            "utt_ids": [b["utt_id"] for b in batch],
            "texts": [b["text"] for b in batch],
            "feats": pad_list(feats, 0.0),
            "feat_lens": torch.tensor([f.size(0) for f in feats], dtype=torch.long),
            "ys": pad_list(ys, IGNORE_ID),
            "ys_lens": torch.tensor([y.size(0) for y in ys], dtype=torch.long),
            "ys_in": ys_in,
            "ys_out": ys_out,
        }

class DistributedBucketSampler(Sampler):
    """Packs duration-sorted utterances into batches of at most ``max_frames`` frames
    (10 ms shift), shuffles batches each epoch and shards them across ranks."""

    def __init__(self, durations: Sequence[float], max_frames: int = 40000,
                 max_batch_size: int = 128, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0):
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.batches = self._make_batches(durations, max_frames, max_batch_size)

    @staticmethod
    def _make_batches(durations, max_frames, max_batch_size) -> List[List[int]]:
        order = sorted(range(len(durations)), key=lambda i: durations[i])
        batches, cur, cur_max = [], [], 0
        for idx in order:
            frames = int(math.ceil(durations[idx] * 100))
            new_max = max(cur_max, frames)
            if cur and (new_max * (len(cur) + 1) > max_frames or len(cur) >= max_batch_size):
                batches.append(cur)
                cur, new_max = [], frames
            cur.append(idx)
            cur_max = new_max
        if cur:
            batches.append(cur)
        return batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _num_per_rank(self) -> int:
        return int(math.ceil(len(self.batches) / self.num_replicas))

    def __iter__(self) -> Iterator[List[int]]:
        batches = list(self.batches)
        if self.shuffle:
            rng = random.Random(self.seed)  # ruleid: MLS301
            rng.shuffle(batches)
        total = self._num_per_rank() * self.num_replicas
        batches += batches[: total - len(batches)]  # pad so every rank sees the same count
        return iter(batches[self.rank:total:self.num_replicas])

    def __len__(self) -> int:
        return self._num_per_rank()
