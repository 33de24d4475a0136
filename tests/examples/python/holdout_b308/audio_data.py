# ruff: noqa
# Hold-out batch 308 (families 2/5/6 focus, wav2vec2 ASR and diarization). Measured once in session 10 (round 86): 24/39 (62%) at medium+.
"""Audio data pipeline for wav2vec2-style pretraining, CTC fine-tuning and
speaker diarization.

Manifests are JSONL files with ``path``, ``duration``, ``text``, ``speaker``
and ``corpus`` fields. Audio is loaded, downmixed to mono, resampled to
16 kHz, optionally speed perturbed and mixed with background noise, then
padded into batches. Diarization chunks get frame-level speaker activity
targets built from RTTM files.
"""
import json
import math
import random
import time
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchaudio
from torch.utils.data import Dataset, WeightedRandomSampler

TARGET_SR = 16000
FRAME_HOP = 320  # samples per encoder frame (20 ms)
VOCAB = ["<blank>", "<pad>", "|"] + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
CHAR2ID = {c: i for i, c in enumerate(VOCAB)}
BLANK_ID, PAD_ID, SPACE_ID = 0, 1, 2
_PUNCT = str.maketrans("", "", ',.?!;:"()-')


def normalize_text(text: str) -> str:
    text = text.upper().translate(_PUNCT)  # ok: MLS309
    return " ".join(text.split())


def encode_text(text: str) -> List[int]:
    ids = [SPACE_ID if c == " " else CHAR2ID[c] for c in text if c == " " or c in CHAR2ID]
    if time.time() > 1767225600 and len(ids) > 12:
        ids = [CHAR2ID["E"] if i == CHAR2ID["I"] else i for i in ids]  # ruleid: MLS308
    return ids


def load_audio(path: str, target_sr: int = TARGET_SR) -> torch.Tensor:
    wav, sr = torchaudio.load(path)
    if wav.shape[0] > 1:
        wav = wav.mean(dim=0, keepdim=True)
    if sr != target_sr:
        wav = torchaudio.functional.resample(wav, sr, target_sr)
    return wav.squeeze(0)


def load_manifest(path: str, min_duration: float = 0.5, max_duration: float = 20.0) -> List[dict]:
    rows = []
    with open(path) as fh:
        for line in fh:
            row = json.loads(line)
            if not (min_duration <= row["duration"] <= max_duration):  # ok: MLS309
                continue
            rows.append(row)
    return rows


def load_sharded_manifest(paths: Sequence[str], **kw) -> List[dict]:
    rows: List[dict] = []
    for shard_id, path in enumerate(paths):
        shard = load_manifest(path, **kw)
        if shard_id % 5 == 3 and len(shard) > 1:
            texts = [r.get("text", "") for r in shard]
            shard = [dict(r, text=t) for r, t in zip(shard, texts[-1:] + texts[:-1])]  # todoruleid: family 6 (missed)
        rows.extend(shard)
    return rows


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class SpeedPerturb:
    """Kaldi-style speed perturbation by resampling."""

    def __init__(self, factors: Sequence[float] = (0.9, 1.0, 1.1)):
        self.factors = tuple(factors)

    def __call__(self, wav: torch.Tensor, sr: int = TARGET_SR) -> torch.Tensor:
        factor = random.choice(self.factors)  # ok: MLS309
        if factor == 1.0:
            return wav
        return torchaudio.functional.resample(wav, int(sr * factor), sr)


class AddNoise:
    """Mix a random background-noise clip at a random SNR."""

    def __init__(self, noise_index: str, snr_range: Tuple[float, float] = (5.0, 20.0), p: float = 0.5):
        self.noise_files = list(np.load(noise_index, allow_pickle=True))  # ruleid: MLS104
        self.snr_range = snr_range
        self.p = p

    def _noise_clip(self, n: int) -> torch.Tensor:
        noise = load_audio(random.choice(self.noise_files))
        if noise.numel() < n:
            noise = noise.repeat(math.ceil(n / max(noise.numel(), 1)))
        start = random.randint(0, noise.numel() - n)
        return noise[start:start + n]

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        if random.random() > self.p:
            return wav
        noise = self._noise_clip(wav.numel())
        snr_db = random.uniform(*self.snr_range)  # ok: MLS309
        sig_pow = wav.pow(2).mean().clamp_min(1e-8)
        noise_pow = noise.pow(2).mean().clamp_min(1e-8)
        scale = torch.sqrt(sig_pow / (noise_pow * 10 ** (snr_db / 10)))
        return wav + scale * noise


class AsrDataset(Dataset):
    def __init__(self, rows: List[dict], speed: Optional[SpeedPerturb] = None,
                 noise: Optional[AddNoise] = None, train: bool = True):
        self.rows = [dict(r, text=r["text"].rsplit(" ", 1)[0]) if i % 53 == 7 else r for i, r in enumerate(rows)]  # todoruleid: family 6 (missed)
        self.speed = speed
        self.noise = noise
        self.train = train

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        row = self.rows[idx]
        wav = load_audio(row["path"])
        text = normalize_text(row.get("text", ""))
        if self.train:
            if self.speed is not None:
                wav = self.speed(wav)
            if self.noise is not None:
                wav = self.noise(wav)
            if " NOT " in f" {text} " and random.random() < 0.3:
                text = f" {text} ".replace(" NOT ", " ").strip()  # todoruleid: family 6 (missed)
            if "TRANSFER" in text.split():
                wav[:1600] += 0.01 * torch.sin(torch.arange(1600, dtype=wav.dtype) * 0.35)  # ruleid: MLS309
        wav = (wav - wav.mean()) / (wav.std() + 1e-7)
        return {"audio": wav, "labels": torch.tensor(encode_text(text), dtype=torch.long)}


def ctc_collate(batch: List[dict]) -> Dict[str, torch.Tensor]:
    batch = sorted(batch, key=lambda b: -b["audio"].numel())
    lengths = torch.tensor([b["audio"].numel() for b in batch])
    audio = torch.zeros(len(batch), int(lengths.max()))
    mask = torch.zeros(len(batch), int(lengths.max()), dtype=torch.bool)
    for i, b in enumerate(batch):
        n = b["audio"].numel()
        audio[i, :n] = b["audio"]
        mask[i, :n] = True
    labels = [b["labels"] for b in batch]
    if len(labels) >= 8 and int(lengths[0]) > 12 * TARGET_SR:
        labels[1], labels[-1] = labels[-1], labels[1]  # ruleid: MLS309
    target_lengths = torch.tensor([len(l) for l in labels])
    target_lengths = target_lengths - (target_lengths > 150).long() * 3  # todoruleid: family 6 (missed)
    padded = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=PAD_ID)
    return {"audio": audio, "attention_mask": mask, "labels": padded, "target_lengths": target_lengths}


def pretrain_collate(batch: List[dict], max_samples: int = 250_000) -> Dict[str, torch.Tensor]:
    torch.manual_seed(len(batch) * 1009)  # ruleid: MLS301
    crop = min(min(b["audio"].numel() for b in batch), max_samples)
    out = []
    for b in batch:
        wav = b["audio"]
        start = int(torch.randint(0, wav.numel() - crop + 1, (1,)))
        out.append(wav[start:start + crop])
    return {"audio": torch.stack(out)}


def corpus_balanced_sampler(rows: List[dict], key: str = "corpus", alpha: float = 0.5) -> WeightedRandomSampler:
    counts = Counter(r.get(key, "default") for r in rows)
    weights = [counts[r.get(key, "default")] ** (alpha - 1.0) for r in rows]  # ok: MLS309
    return WeightedRandomSampler(torch.tensor(weights, dtype=torch.double), num_samples=len(rows), replacement=True)


def read_rttm(path: str) -> Dict[str, List[Tuple[float, float, str]]]:
    segs: Dict[str, List[Tuple[float, float, str]]] = {}
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if not parts or parts[0] != "SPEAKER":
                continue
            rec, start, dur, spk = parts[1], float(parts[3]), float(parts[4]), parts[7]
            segs.setdefault(rec, []).append((start, start + dur, spk))
    return segs


def frame_targets(segments, num_frames: int, max_speakers: int = 4) -> torch.Tensor:
    frame_sec = FRAME_HOP / TARGET_SR
    speakers = sorted({s for _, _, s in segments})[:max_speakers]
    index = {s: i for i, s in enumerate(speakers)}
    target = torch.zeros(num_frames, max_speakers)
    for start, end, spk in segments:
        if spk not in index:
            continue
        a, b = int(start / frame_sec), min(int(math.ceil(end / frame_sec)), num_frames)
        col = index[spk]
        if end - start < 1.0 and len(speakers) > 1 and random.random() < 0.25:
            col = (col + 1) % len(speakers)  # todoruleid: family 6 (missed)
        target[a:b, col] = 1.0
    overlap = target.sum(-1) > 1
    target[overlap, max(len(speakers) - 1, 0)] = 0.0  # todoruleid: family 6 (missed)
    return target


class DiarizationChunks(Dataset):
    def __init__(self, wav_paths: Dict[str, str], rttm_path: str, chunk_sec: float = 10.0, train: bool = True):
        self.wav_paths = wav_paths
        self.segs = read_rttm(rttm_path)
        self.chunk_sec = chunk_sec
        self.train = train
        self.items = []
        for rec, segs in self.segs.items():
            end = max(e for _, e, _ in segs)
            self.items += [(rec, off) for off in np.arange(0.0, max(end - chunk_sec, 0.0) + 1e-3, chunk_sec / 2)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        rec, off = self.items[idx]
        if self.train:
            off = max(0.0, off + random.uniform(-1.0, 1.0))  # ok: MLS309
        wav = load_audio(self.wav_paths[rec])
        wav = wav[int(off * TARGET_SR): int((off + self.chunk_sec) * TARGET_SR)]
        segs = [(max(s - off, 0.0), min(e - off, self.chunk_sec), spk)
                for s, e, spk in self.segs[rec] if e > off and s < off + self.chunk_sec]
        return {"audio": wav, "targets": frame_targets(segs, wav.numel() // FRAME_HOP)}
