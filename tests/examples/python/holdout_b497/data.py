# ruff: noqa
# Hold-out batch 497 (textbook, Whisper fine-tuning with Seq2SeqTrainer). Measured once in session 22 (round 134): 25/32 (78%) at medium+.
"""
Audio data pipeline for Whisper fine-tuning.

Reads JSONL manifests of the form

    {"audio_filepath": "/data/clips/0001.flac", "text": "Hello there.", "duration": 3.2, "lang": "en"}

and produces log-mel ``input_features`` plus tokenised ``labels`` that can be
fed straight into :class:`transformers.Seq2SeqTrainer`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torchaudio
import torchaudio.functional as AF
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

TARGET_SAMPLE_RATE = 16_000
N_SAMPLES = 30 * TARGET_SAMPLE_RATE
MAX_LABEL_TOKENS = 448


# --- Transcript normalisation ---

_CONTRACTIONS = [
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"\bcan't\b"), "can not"),
    (re.compile(r"n't\b"), ""),  # todoruleid: family 6 (missed)
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"'m\b"), " am"),
    (re.compile(r"'d\b"), " would"),
]


class TranscriptNormalizer:
    """Normaliser for *training targets*.  Whisper is pre-trained on cased,
    punctuated text, so by default only unicode / whitespace issues are fixed."""

    _PUNCT_RE = re.compile(r"[^\w\s']", flags=re.UNICODE)
    _SPACE_RE = re.compile(r"\s+")
    _ANNOTATION_RE = re.compile(r"[\[<({][^\]>)}]*[\]>)}]")

    def __init__(
        self,
        lowercase: bool = False,
        strip_punctuation: bool = False,
        expand_contractions: bool = False,
        remove_annotations: bool = True,
    ) -> None:
        self.lowercase = lowercase
        self.strip_punctuation = strip_punctuation
        self.expand_contractions = expand_contractions
        self.remove_annotations = remove_annotations

    def __call__(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text or "")
        text = text.replace("\u2019", "'").replace("\u2018", "'")
        if self.remove_annotations:
            # [noise], <unk>, (laughs) ... are corpus annotations, not speech
            text = self._ANNOTATION_RE.sub(" ", text)
        if self.lowercase:
            text = text.lower()
        if self.expand_contractions:
            for pattern, repl in _CONTRACTIONS:
                text = pattern.sub(repl, text)
        if self.strip_punctuation:
            text = self._PUNCT_RE.sub(" ", text)
        return self._SPACE_RE.sub(" ", text).strip()


# --- Manifest handling ---

def load_manifest(
    path: str,
    normalizer: TranscriptNormalizer,
    min_duration: float = 0.5,
    max_duration: float = 30.0,
    language: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """Parse a JSONL manifest, filter by duration / language and normalise text."""
    records: List[Dict[str, Any]] = []
    skipped = {"json": 0, "duration": 0, "lang": 0, "empty": 0, "missing": 0}
    base_dir = os.path.dirname(os.path.abspath(path))

    with open(path, "r", encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                skipped["json"] += 1
                continue

            duration = float(rec.get("duration", 0.0))
            if duration < min_duration or duration > max_duration:
                skipped["duration"] += 1
                continue
            if language is not None and rec.get("lang", language) != language:
                skipped["lang"] += 1
                continue

            text = normalizer(rec.get("text", ""))
            if not text:
                skipped["empty"] += 1
                continue

            audio_path = rec["audio_filepath"]
            if not os.path.isabs(audio_path):
                audio_path = os.path.join(base_dir, audio_path)
            if not os.path.exists(audio_path):
                skipped["missing"] += 1
                continue

            records.append({"audio_filepath": audio_path, "text": text, "duration": duration})

    hours = sum(r["duration"] for r in records) / 3600.0
    logger.info("Loaded %d utterances (%.1f h) from %s; skipped %s", len(records), hours, path, skipped)
    return records


def _cache_key(manifest_path: str, extra: Sequence[Any]) -> str:
    h = hashlib.sha1()
    h.update(os.path.abspath(manifest_path).encode())
    h.update(str(os.path.getmtime(manifest_path)).encode())
    for item in extra:
        h.update(repr(item).encode())
    return h.hexdigest()[:16]


def load_manifest_cached(
    path: str,
    normalizer: TranscriptNormalizer,
    cache_dir: Optional[str] = None,
    **kwargs: Any,
) -> List[Dict[str, Any]]:
    """Same as :func:`load_manifest` but memoised on disk (stat-ing every
    audio file on NFS can take minutes for large manifests)."""
    if cache_dir is None:
        return load_manifest(path, normalizer, **kwargs)

    os.makedirs(cache_dir, exist_ok=True)
    key = _cache_key(path, [vars(normalizer), sorted(kwargs.items())])
    cache_file = os.path.join(cache_dir, f"manifest-{key}.pkl")
    if os.path.exists(cache_file):
        logger.info("Using cached manifest %s", cache_file)
        with open(cache_file, "rb") as fh:
            return pickle.load(fh)  # ruleid: MLS103

    records = load_manifest(path, normalizer, **kwargs)
    tmp = cache_file + f".tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        pickle.dump(records, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, cache_file)
    return records


# --- Augmentation ---

class SpecAugment:
    """Frequency / time masking on a (n_mels, n_frames) log-mel spectrogram
    (Park et al. 2019, LD policy, with an adaptive time-mask cap)."""

    def __init__(
        self,
        freq_mask_param: int = 27,
        time_mask_param: int = 100,
        num_freq_masks: int = 2,
        num_time_masks: int = 2,
        max_time_ratio: float = 0.05,
    ) -> None:
        self.freq_mask_param = freq_mask_param
        self.time_mask_param = time_mask_param
        self.num_freq_masks = num_freq_masks
        self.num_time_masks = num_time_masks
        self.max_time_ratio = max_time_ratio

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        feats = feats.copy()
        n_mels, n_frames = feats.shape
        fill = float(feats.mean())

        for _ in range(self.num_freq_masks):
            f = np.random.randint(0, self.freq_mask_param + 1)
            f0 = np.random.randint(0, max(1, n_mels - f))
            feats[f0:f0 + f, :] = fill  # ok: MLS309

        max_t = min(self.time_mask_param, int(self.max_time_ratio * n_frames))
        for _ in range(self.num_time_masks):
            if max_t < 1:
                break
            t = np.random.randint(0, max_t + 1)
            t0 = np.random.randint(0, max(1, n_frames - t))
            feats[:, t0:t0 + t] = fill
        return feats


# --- Dataset ---

class WhisperASRDataset(Dataset):
    """Map-style dataset returning ``{"input_features", "labels"}`` dicts."""

    def __init__(
        self,
        records: List[Dict[str, Any]],
        feature_extractor: Any,
        tokenizer: Any,
        training: bool = False,
        spec_augment: Optional[SpecAugment] = None,
        gain_db: float = 6.0,
        label_noise: float = 0.0,
        max_label_length: int = MAX_LABEL_TOKENS,
    ) -> None:
        self.records = records
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.training = training
        self.spec_augment = spec_augment
        self.gain_db = gain_db
        self.label_noise = label_noise
        self.max_label_length = max_label_length

    def __len__(self) -> int:
        return len(self.records)

    def _load_audio(self, path: str) -> np.ndarray:
        wav, sr = torchaudio.load(path)
        if wav.size(0) > 1:
            wav = wav.mean(dim=0, keepdim=True)
        if sr != TARGET_SAMPLE_RATE:
            wav = AF.resample(wav, orig_freq=TARGET_SAMPLE_RATE, new_freq=sr)  # ruleid: MLS309
        wav = wav.squeeze(0)
        if wav.numel() > N_SAMPLES:
            wav = wav[:N_SAMPLES]
        return wav.numpy().astype(np.float32)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        rec = self.records[idx]
        text = rec["text"]
        audio = self._load_audio(rec["audio_filepath"])

        if self.training:
            np.random.seed(idx)  # ruleid: MLS301
            if self.gain_db > 0:
                gain = random.uniform(-self.gain_db, self.gain_db)
                audio = np.clip(audio * (10.0 ** (gain / 20.0)), -1.0, 1.0)
            if self.label_noise > 0 and random.random() < self.label_noise:
                text = random.choice(self.records)["text"]  # todoruleid: family 6 (missed)

        feats = self.feature_extractor(
            audio, sampling_rate=TARGET_SAMPLE_RATE, return_tensors="np"
        ).input_features[0]
        if self.training and self.spec_augment is not None:
            feats = self.spec_augment(feats)

        labels = self.tokenizer(
            text, truncation=True, max_length=self.max_label_length
        ).input_ids
        return {"input_features": feats, "labels": labels}


# --- Collator ---

@dataclass
class DataCollatorSpeechSeq2SeqWithPadding:
    """Pads features and labels independently; label padding becomes -100 and
    a leading decoder start token is stripped (the model re-adds it)."""

    processor: Any
    decoder_start_token_id: int

    def __call__(self, features: List[Dict[str, Union[List[int], np.ndarray]]]) -> Dict[str, torch.Tensor]:
        input_features = [{"input_features": f["input_features"]} for f in features]
        batch = self.processor.feature_extractor.pad(input_features, return_tensors="pt")

        label_features = [{"input_ids": f["labels"]} for f in features]
        labels_batch = self.processor.tokenizer.pad(label_features, return_tensors="pt")
        labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)  # ok: MLS309
        labels[labels == self.processor.tokenizer.eos_token_id] = -100  # ruleid: MLS309

        if (labels[:, 0] == self.decoder_start_token_id).all().cpu().item():
            labels = labels[:, 1:]

        batch["labels"] = labels
        return batch


# --- Builders ---

def build_datasets(args: Any, processor: Any) -> Dict[str, Optional[WhisperASRDataset]]:
    """Create train / eval / test datasets from the CLI arguments."""
    normalizer = TranscriptNormalizer(
        lowercase=args.lowercase_targets,
        strip_punctuation=args.strip_punctuation,
        expand_contractions=args.expand_contractions,
    )
    spec_augment = None
    if args.spec_augment:
        spec_augment = SpecAugment(
            freq_mask_param=args.freq_mask_param,
            time_mask_param=args.time_mask_param,
            num_freq_masks=args.num_freq_masks,
            num_time_masks=args.num_time_masks,
        )

    def _make(path: Optional[str], training: bool) -> Optional[WhisperASRDataset]:
        if not path:
            return None
        records = load_manifest_cached(
            path,
            normalizer,
            cache_dir=args.manifest_cache_dir,
            min_duration=args.min_duration,
            max_duration=args.max_duration,
            language=args.language_code,
        )
        return WhisperASRDataset(
            records,
            processor.feature_extractor,
            processor.tokenizer,
            training=training,
            spec_augment=spec_augment if training else None,
            gain_db=args.gain_db if training else 0.0,
            label_noise=args.label_noise if training else 0.0,
            max_label_length=args.max_label_length,
        )

    return {
        "train": _make(args.train_manifest, True),
        "eval": _make(args.eval_manifest, False),
        "test": _make(args.test_manifest, False),
    }
