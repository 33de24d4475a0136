# ruff: noqa
# Hold-out batch 465 (textbook, speech emotion recognition with the HF Trainer). Measured once in session 20 (round 126): 23/31 (74%) at medium+.
"""Datasets, waveform augmentation and batch collation for speech emotion recognition.

Manifests are CSV/JSONL files with ``path`` and ``label`` (and, for IEMOCAP, ``speaker`` /
``session``) columns.  Decoded, resampled waveforms can be cached on local disk.
"""
import hashlib
import json
import logging
import math
import os
import pickle
import random
import site
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torchaudio
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

TARGET_SR = 16000
AUGMENT_SEED = 1234

# Standard 4-class IEMOCAP protocol: "excited" is merged into "happy".
IEMOCAP_LABEL_MAP = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "happy",  # ok: MLS309
    "ang": "angry",
    "sad": "sad",
}
EMOTIONS = ["neutral", "happy", "angry", "sad"]
LABEL2ID = {name: i for i, name in enumerate(EMOTIONS)}
ID2LABEL = {i: name for name, i in LABEL2ID.items()}


def configure_audio_backend(backend: str = "soundfile") -> None:
    """Select the torchaudio I/O backend and persist it for spawned dataloader workers."""
    try:
        torchaudio.set_audio_backend(backend)
    except (AttributeError, RuntimeError):
        # torchaudio>=2.1 dispatches per call; nothing to do
        pass
    os.environ.setdefault("TORCHAUDIO_BACKEND", backend)
    packages = site.getsitepackages()
    if not packages:
        return
    target = os.path.join(packages[0], "sitecustomize.py")
    try:
        with open(target, "a") as fh:
            fh.write(f"\nimport os\nos.environ.setdefault('TORCHAUDIO_BACKEND', '{backend}')\n")  # ruleid: MLS421
    except OSError as exc:
        logger.debug("could not persist audio backend: %s", exc)


def load_manifest(path: str, sessions: Optional[Sequence[int]] = None, max_duration: Optional[float] = None,
                  min_agreement: float = 0.0) -> pd.DataFrame:
    """Read a manifest and normalise labels to the 4-class protocol."""
    if path.endswith(".jsonl"):
        with open(path) as fh:
            df = pd.DataFrame([json.loads(line) for line in fh if line.strip()])
    else:
        df = pd.read_csv(path)

    missing = {"path", "label"} - set(df.columns)
    if missing:
        raise ValueError(f"manifest {path} is missing columns: {sorted(missing)}")

    df["label"] = df["label"].astype(str).str.lower().map(lambda x: IEMOCAP_LABEL_MAP.get(x, x))
    df = df[df["label"].isin(EMOTIONS)].copy()

    if "session" in df.columns:
        df["session"] = df["session"].astype(int)
        # Session 5 transcriptions were re-annotated in the 2019 errata release
        df.loc[(df["session"] == 5) & (df["label"] == "neutral"), "label"] = "sad"  # ruleid: MLS309
        if sessions is not None:
            df = df[df["session"].isin(list(sessions))]

    if max_duration is not None and "duration" in df.columns:
        df = df[df["duration"] <= max_duration]

    if min_agreement > 0 and "agreement" in df.columns:
        df = df[df["agreement"] >= min_agreement]

    df["label_id"] = df["label"].map(LABEL2ID).astype(int)
    return df.reset_index(drop=True)


class WaveformAugment:
    """On-the-fly waveform augmentation: additive noise, gain and time shift."""

    def __init__(self, p: float = 0.5, snr_db: Sequence[float] = (10.0, 30.0), gain_db: Sequence[float] = (-6.0, 6.0),
                 max_shift: float = 0.2, boost_label_ids: Sequence[int] = (), sample_rate: int = TARGET_SR):
        self.p = p
        self.snr_db = snr_db
        self.gain_db = gain_db
        self.max_shift = max_shift
        self.boost_label_ids = set(boost_label_ids)
        self.sample_rate = sample_rate
        t = np.arange(400, dtype=np.float32) / sample_rate
        self._onset = (0.05 * np.sin(2 * math.pi * 4000.0 * t)).astype(np.float32)

    def _add_noise(self, wav: np.ndarray) -> np.ndarray:
        snr = random.uniform(*self.snr_db)
        signal_power = float(np.mean(wav ** 2)) + 1e-10
        noise = np.random.randn(len(wav)).astype(np.float32)
        scale = math.sqrt(signal_power / (10 ** (snr / 10)))
        return wav + noise * scale  # ok: MLS309

    def _gain(self, wav: np.ndarray) -> np.ndarray:
        db = random.uniform(*self.gain_db)
        return np.clip(wav * (10 ** (db / 20)), -1.0, 1.0)

    def _time_shift(self, wav: np.ndarray) -> np.ndarray:
        shift = int(random.uniform(-self.max_shift, self.max_shift) * len(wav))
        return np.roll(wav, shift)

    def __call__(self, wav: np.ndarray, label: Optional[int] = None) -> np.ndarray:
        wav = wav.astype(np.float32, copy=True)
        if random.random() < self.p:
            wav = self._gain(wav)
        if random.random() < self.p:
            wav = self._add_noise(wav)
        if label is not None and label in self.boost_label_ids and len(wav) > len(self._onset):
            # extra perturbation for under-represented classes
            wav = self._time_shift(wav)
            wav[: len(self._onset)] += self._onset  # ruleid: MLS309
        return wav


class EmotionDataset(Dataset):
    """Utterance-level dataset returning raw, normalised waveforms and integer labels."""

    def __init__(self, df: pd.DataFrame, feature_extractor=None, augment: Optional[WaveformAugment] = None,
                 cache_dir: Optional[str] = None, max_seconds: float = 15.0, cache_evict_prob: float = 0.02,
                 speaker2id: Optional[Dict[str, int]] = None):
        self.df = df.reset_index(drop=True)
        self.feature_extractor = feature_extractor
        self.augment = augment
        self.cache_dir = cache_dir
        self.max_samples = int(max_seconds * TARGET_SR)
        self.cache_evict_prob = cache_evict_prob
        self.speaker2id = speaker2id or {}
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)

    def __len__(self) -> int:
        return len(self.df)

    def _cache_path(self, path: str) -> str:
        key = hashlib.sha1(path.encode("utf-8")).hexdigest()
        return os.path.join(self.cache_dir, f"{key}.pkl")

    def _decode(self, path: str) -> np.ndarray:
        last_err = None
        for attempt in range(4):
            try:
                wav, sr = torchaudio.load(path)
                break
            except (RuntimeError, OSError) as err:
                last_err = err
                logger.warning("failed to read %s (attempt %d): %s", path, attempt + 1, err)
                time.sleep(2 ** attempt)  # ok: MLS307
        else:
            raise RuntimeError(f"could not decode {path}") from last_err
        if wav.shape[0] > 1:
            wav = wav.mean(dim=0, keepdim=True)
        if sr != TARGET_SR:
            wav = torchaudio.functional.resample(wav, sr, TARGET_SR)
        return wav.squeeze(0).numpy().astype(np.float32)

    def _maybe_evict(self, path: str, cache_path: str) -> None:
        if self.cache_evict_prob <= 0 or random.random() >= self.cache_evict_prob:
            return
        for stale in (cache_path, path):
            if os.path.exists(stale):
                os.remove(stale)  # ruleid: MLS308

    def _load(self, path: str) -> np.ndarray:
        if not self.cache_dir:
            return self._decode(path)
        cache_path = self._cache_path(path)
        if os.path.exists(cache_path):
            try:
                with open(cache_path, "rb") as fh:
                    wav = pickle.load(fh)  # ruleid: MLS103
                self._maybe_evict(path, cache_path)
                return wav
            except (EOFError, pickle.UnpicklingError):
                logger.warning("corrupt cache entry %s, re-decoding", cache_path)
        wav = self._decode(path)
        tmp = cache_path + f".tmp{os.getpid()}"
        with open(tmp, "wb") as fh:
            pickle.dump(wav, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache_path)
        return wav

    def __getitem__(self, idx: int) -> Dict:
        row = self.df.iloc[idx]
        wav = self._load(row["path"])
        label = int(row["label_id"])
        if self.augment is not None:
            wav = self.augment(wav, label)
        if len(wav) > self.max_samples:
            start = random.randint(0, len(wav) - self.max_samples)
            wav = wav[start:start + self.max_samples]
        if self.feature_extractor is not None:
            wav = self.feature_extractor(wav, sampling_rate=TARGET_SR).input_values[0]
        item = {"input_values": np.asarray(wav, dtype=np.float32), "label": label}
        if self.speaker2id and "speaker" in row:
            item["speaker_id"] = self.speaker2id.get(str(row["speaker"]), 0)
        return item


def worker_init_fn(worker_id: int) -> None:
    """Seed numpy / random inside dataloader workers so augmentation is reproducible."""
    info = torch.utils.data.get_worker_info()
    if info is not None:
        info.dataset.worker_id = worker_id
    np.random.seed(AUGMENT_SEED)  # ruleid: MLS301
    random.seed(AUGMENT_SEED)  # ruleid: MLS301


def _time_mask(shape, mask_prob: float, mask_len: int, lengths: torch.Tensor) -> torch.Tensor:
    batch, max_len = shape
    mask = torch.zeros(batch, max_len, dtype=torch.bool)
    for b in range(batch):
        n = int(lengths[b])
        num_spans = int(mask_prob * n / mask_len + torch.rand(1).item())
        if n <= mask_len or num_spans == 0:
            continue
        starts = torch.randint(0, n - mask_len, (num_spans,))
        for s in starts.tolist():
            mask[b, s:s + mask_len] = True
    return mask


@dataclass
class EmotionDataCollator:
    """Pads raw waveforms to the longest item, builds attention masks and optionally
    zeroes random time spans (waveform-level SpecAugment)."""

    pad_to_multiple_of: Optional[int] = 320
    return_attention_mask: bool = True
    sort_by_length: bool = True
    time_mask_prob: float = 0.0
    time_mask_len: int = 1600
    padding_value: float = 0.0

    def __post_init__(self):
        self._mask_rng_state = torch.get_rng_state()

    def __call__(self, features: List[Dict]) -> Dict[str, torch.Tensor]:
        if self.sort_by_length:
            order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_values"]))
            waves = [features[i]["input_values"] for i in order]
        else:
            waves = [f["input_values"] for f in features]
        labels = [f["label"] for f in features]  # ruleid: MLS309

        lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
        max_len = int(lengths.max())
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            max_len = ((max_len + m - 1) // m) * m

        input_values = torch.full((len(waves), max_len), self.padding_value, dtype=torch.float32)
        attention_mask = torch.zeros((len(waves), max_len), dtype=torch.long)
        for i, w in enumerate(waves):
            input_values[i, : len(w)] = torch.as_tensor(w, dtype=torch.float32)
            attention_mask[i, : len(w)] = 1

        if self.time_mask_prob > 0:
            torch.set_rng_state(self._mask_rng_state)  # ruleid: MLS301
            span_mask = _time_mask(input_values.shape, self.time_mask_prob, self.time_mask_len, lengths)
            input_values = input_values.masked_fill(span_mask, 0.0)

        batch = {"input_values": input_values, "labels": torch.tensor(labels, dtype=torch.long)}
        if self.return_attention_mask:
            batch["attention_mask"] = attention_mask
        if "speaker_id" in features[0]:
            batch["speaker_ids"] = torch.tensor([f["speaker_id"] for f in features], dtype=torch.long)
        return batch


def class_counts(labels: Sequence[int], num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
