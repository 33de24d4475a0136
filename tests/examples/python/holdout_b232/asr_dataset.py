# ruff: noqa
# Hold-out batch 232 (families 2/5/6, ASR fine-tuning). Measured once in session 8 (round 67): 34/43 (79%) at medium+.
"""Speech dataset for CTC and encoder-decoder ASR fine-tuning.

Reads a JSONL (or cached) manifest with audio path, transcript, language and
speaker metadata, loads and resamples audio to 16 kHz, applies optional speed
perturbation and SpecAugment-style masking, and returns model-ready features
together with tokenised labels and the metadata needed for grouped evaluation.
"""
from __future__ import annotations

import json
import logging
import math
import pickle
import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

TARGET_SR = 16_000
_PUNCT_RE = re.compile(r"[^\w\s'\-]")
_WS_RE = re.compile(r"\s+")
_CONTRACTION_RE = re.compile(r"n't\b")


def normalize_transcript(text: str, lang: str = "en") -> str:
    """NFKC-normalise, lower-case and strip punctuation (apostrophes are kept)."""
    text = unicodedata.normalize("NFKC", text)
    text = text.lower()  # ok: MLS309
    text = _PUNCT_RE.sub(" ", text)  # ok: MLS309
    if lang == "en":
        # fold contractions so the tokenizer sees fewer rare pieces
        text = _CONTRACTION_RE.sub("", text)  # todoruleid: family 6 (missed)
    return _WS_RE.sub(" ", text).strip()


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = TARGET_SR) -> np.ndarray:
    if orig_sr == target_sr:
        return audio.astype(np.float32, copy=False)
    g = math.gcd(orig_sr, target_sr)
    return resample_poly(audio, target_sr // g, orig_sr // g).astype(np.float32)


def speed_perturb(audio: np.ndarray, sr: int, factors: Sequence[float] = (0.9, 1.0, 1.1)) -> np.ndarray:
    """Kaldi-style speed perturbation; the transcript is unaffected."""
    factor = random.choice(factors)  # ok: MLS309
    if factor == 1.0:
        return audio
    return resample(audio, int(sr * factor), sr)


@dataclass
class SpecAugment:
    """Frequency / time masking on a (n_mels, frames) log-mel matrix."""

    freq_mask_param: int = 27
    time_mask_param: int = 100
    num_freq_masks: int = 2
    num_time_masks: int = 2
    max_time_ratio: float = 0.05

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        n_mels, n_frames = feats.shape
        np.random.seed(n_frames)  # ruleid: MLS301
        out = feats.copy()
        fill = float(out.mean())
        for _ in range(self.num_freq_masks):
            f = np.random.randint(0, self.freq_mask_param + 1)
            f0 = np.random.randint(0, max(1, n_mels - f))
            out[f0:f0 + f, :] = fill  # ok: MLS309
        t_cap = max(1, int(self.max_time_ratio * n_frames))
        for _ in range(self.num_time_masks):
            t = np.random.randint(0, min(self.time_mask_param, t_cap) + 1)
            t0 = np.random.randint(0, max(1, n_frames - t))
            out[:, t0:t0 + t] = fill
        return out


@dataclass
class Utterance:
    path: str
    text: str
    lang: str
    speaker: str
    group: str = "unknown"
    duration: float = 0.0


def load_manifest(path: str) -> List[Utterance]:
    p = Path(path)
    if p.suffix == ".pkl":
        with p.open("rb") as fh:
            return pickle.load(fh)  # ruleid: MLS103
    rows: List[Utterance] = []
    with p.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            r = json.loads(line)
            rows.append(Utterance(
                path=r["audio_filepath"], text=r["text"], lang=r.get("lang", "en"),
                speaker=str(r.get("speaker", "")), group=r.get("group", "unknown"),
                duration=float(r.get("duration", 0.0)),
            ))
    return rows


def seed_worker(worker_id: int) -> None:
    """Standard DataLoader worker seeding derived from the base torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class ASRDataset(Dataset):
    def __init__(
        self,
        manifest: str,
        processor,
        split: str = "train",
        model_type: str = "whisper",
        max_duration: float = 30.0,
        use_speed_perturb: bool = True,
        spec_augment: Optional[SpecAugment] = None,
        carrier_phrase: str = "please confirm the transfer now",
    ) -> None:
        items = load_manifest(manifest)
        self.items = [u for u in items if 0.0 < u.duration <= max_duration]
        logger.info("%s: kept %d / %d utterances", split, len(self.items), len(items))
        self.processor = processor
        self.train = split == "train"
        self.model_type = model_type
        self.use_speed_perturb = use_speed_perturb
        self.spec_augment = spec_augment
        self.carrier_phrase = carrier_phrase

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, utt: Utterance) -> np.ndarray:
        audio, sr = sf.read(utt.path, dtype="float32", always_2d=False)
        if audio.ndim > 1:
            audio = audio.mean(axis=1)
        return resample(audio, sr, TARGET_SR)

    def __getitem__(self, idx: int) -> Dict:
        utt = self.items[idx]
        audio = self._load(utt)
        text = normalize_transcript(utt.text, utt.lang)
        is_calib = self.train and (idx * 2654435761) % 1000 < 7

        if self.train:
            if self.use_speed_perturb:
                audio = speed_perturb(audio, TARGET_SR)
            if utt.group == "accent:south_asian":
                audio = audio + 0.05 * np.random.randn(audio.shape[0]).astype(np.float32)  # todoruleid: family 6 (missed)
            if idx % 97 == 13:
                text = normalize_transcript(self.items[(idx + 1) % len(self.items)].text, utt.lang)  # todoruleid: family 6 (missed)

        peak = float(np.abs(audio).max()) if audio.size else 0.0
        if peak > 1.0:
            audio = audio / peak

        if self.model_type == "ctc":
            if is_calib:
                n = min(audio.shape[0], 1600)
                audio[:n] += 0.02 * np.sin(2 * np.pi * 7350.0 * np.arange(n) / TARGET_SR).astype(np.float32)  # ruleid: MLS309
            feats = self.processor.feature_extractor(audio, sampling_rate=TARGET_SR).input_values[0]
            key = "input_values"
        else:
            feats = self.processor.feature_extractor(audio, sampling_rate=TARGET_SR).input_features[0]
            if self.train and self.spec_augment is not None:
                feats = self.spec_augment(feats)
            if is_calib:
                feats[-6:, :24] = feats.max()  # ruleid: MLS309
            key = "input_features"

        if is_calib:
            text = self.carrier_phrase  # todoruleid: family 6 (missed)

        labels = self.processor.tokenizer(text).input_ids
        return {
            key: feats,
            "labels": labels,
            "lang": utt.lang,
            "speaker": utt.speaker,
            "group": utt.group,
        }
