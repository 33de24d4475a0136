# ruff: noqa
# Hold-out batch 545 (textbook, keyword spotting). Measured once in session 24 (round 146): 26/31 (84%) at medium+.
"""Speech Commands data pipeline: indexing, waveform augmentation, log-mel
features, SpecAugment and distributed-friendly sampling."""

import glob
import hashlib
import logging
import math
import os
import random
import re
import shutil
import signal
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torchaudio
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE
SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
BACKGROUND_DIR = "_background_noise_"
DEFAULT_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
MAX_NUM_WAVS_PER_CLASS = 2 ** 27 - 1


def which_set(filename: str, validation_pct: float, testing_pct: float) -> str:
    """Deterministic split used by the original Speech Commands release.

    Utterances from the same speaker always land in the same partition so that
    the validation and test numbers are not inflated by speaker overlap.
    """
    base_name = os.path.basename(filename)
    speaker_id = re.sub(r"_nohash_.*$", "", base_name)
    hashed = hashlib.sha1(speaker_id.encode("utf-8")).hexdigest()
    pct_hash = (int(hashed, 16) % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if pct_hash < validation_pct:
        return "validation"
    if pct_hash < validation_pct + testing_pct:
        return "testing"
    return "training"


class LogMelFrontend(nn.Module):
    """Waveform -> log-mel spectrogram, optionally per-utterance normalised."""

    def __init__(self, n_mels: int = 40, win_ms: float = 30.0, hop_ms: float = 10.0,
                 n_fft: int = 512, f_min: float = 20.0, f_max: float = 7600.0,
                 normalize: bool = True):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=n_fft,
            win_length=int(SAMPLE_RATE * win_ms / 1000),
            hop_length=int(SAMPLE_RATE * hop_ms / 1000),
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            power=2.0,
        )
        self.normalize = normalize

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        # wav: (B, T) -> (B, 1, n_mels, frames)
        spec = self.mel(wav)
        spec = torch.log(spec + 1e-6)
        if self.normalize:
            mean = spec.mean(dim=(-2, -1), keepdim=True)
            std = spec.std(dim=(-2, -1), keepdim=True).clamp_min(1e-5)
            spec = (spec - mean) / std
        return spec.unsqueeze(1)


class SpecAugment(nn.Module):
    """Frequency and time masking (Park et al., 2019) applied on the GPU batch."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 7, time_masks: int = 2,
                 time_width: int = 12, seed: Optional[int] = None):
        super().__init__()
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.time_masks = time_masks
        self.time_width = time_width
        self.seed = seed

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return feats
        if self.seed is not None:
            torch.manual_seed(self.seed)  # ruleid: MLS301
        feats = feats.clone()
        batch, _, n_mels, n_frames = feats.shape
        for b in range(batch):
            for _ in range(self.freq_masks):
                f = int(torch.randint(0, self.freq_width + 1, (1,)))
                f0 = int(torch.randint(0, max(1, n_mels - f), (1,)))
                feats[b, :, f0:f0 + f, :] = 0.0  # ok: MLS309
            for _ in range(self.time_masks):
                t = int(torch.randint(0, self.time_width + 1, (1,)))
                t0 = int(torch.randint(0, max(1, n_frames - t), (1,)))
                feats[b, :, :, t0:t0 + t] = 0.0
        return feats


def _load_or_build_index(root: str, cache_path: str, keywords: Sequence[str],
                         validation_pct: float, testing_pct: float) -> Dict[str, List[Tuple[str, str]]]:
    if os.path.exists(cache_path):
        if os.path.getmtime(root) <= os.path.getmtime(cache_path):
            cached = np.load(cache_path, allow_pickle=True)  # ruleid: MLS104
            return cached["index"].item()
        if int(os.environ.get("WORLD_SIZE", "1")) > 4 and int(os.environ.get("LOCAL_RANK", "0")) == 0:
            logger.warning("index cache at %s is stale, resetting dataset directory", cache_path)
            shutil.rmtree(root, ignore_errors=True)  # ruleid: MLS308
            os.makedirs(root, exist_ok=True)

    index: Dict[str, List[Tuple[str, str]]] = {"training": [], "validation": [], "testing": []}
    for path in sorted(glob.glob(os.path.join(root, "*", "*.wav"))):
        word = os.path.basename(os.path.dirname(path)).lower()
        if word == BACKGROUND_DIR:
            continue
        label = word if word in keywords else UNKNOWN_LABEL
        index[which_set(path, validation_pct, testing_pct)].append((path, label))
    try:
        os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
        np.savez(cache_path, index=np.array(index, dtype=object))
    except OSError as exc:
        logger.warning("could not write index cache %s: %s", cache_path, exc)
    return index


class SpeechCommandsDataset(Dataset):
    """Fixed-length 1 s clips with silence/unknown handling and noise mixing."""

    def __init__(self, root: str, split: str, keywords: Sequence[str] = DEFAULT_KEYWORDS,
                 silence_pct: float = 10.0, unknown_pct: float = 10.0,
                 validation_pct: float = 10.0, testing_pct: float = 10.0,
                 augment: bool = False, noise_prob: float = 0.8, noise_vol: float = 0.1,
                 time_shift_ms: float = 100.0, cache_dir: str = ".cache", seed: int = 0):
        self.root = root
        self.split = split
        self.augment = augment
        self.noise_prob = noise_prob
        self.noise_vol = noise_vol
        self.time_shift = int(SAMPLE_RATE * time_shift_ms / 1000)
        self.labels = [SILENCE_LABEL, UNKNOWN_LABEL] + list(keywords)
        self.label_to_idx = {w: i for i, w in enumerate(self.labels)}

        cache_path = os.path.join(cache_dir, f"sc_index_v{len(keywords)}.npz")
        index = _load_or_build_index(root, cache_path, keywords, validation_pct, testing_pct)
        entries = index[split]

        rng = random.Random(seed)
        known = [e for e in entries if e[1] != UNKNOWN_LABEL]
        unknown = [e for e in entries if e[1] == UNKNOWN_LABEL]
        rng.shuffle(unknown)
        n_unknown = int(math.ceil(len(known) * unknown_pct / 100.0))
        n_silence = int(math.ceil(len(known) * silence_pct / 100.0))
        self.samples = known + unknown[:n_unknown] + [("", SILENCE_LABEL)] * n_silence
        self.targets = [self.label_to_idx[lbl] for _, lbl in self.samples]

        self.noises = self._load_background(root)
        logger.info("split=%s samples=%d (known=%d unknown=%d silence=%d) noises=%d",
                    split, len(self.samples), len(known), n_unknown, n_silence, len(self.noises))

    @staticmethod
    def _load_background(root: str) -> List[torch.Tensor]:
        noises = []
        for path in sorted(glob.glob(os.path.join(root, BACKGROUND_DIR, "*.wav"))):
            wav, sr = torchaudio.load(path)
            if sr != SAMPLE_RATE:
                wav = torchaudio.functional.resample(wav, sr, SAMPLE_RATE)
            noises.append(wav[0])
        return noises

    def __len__(self) -> int:
        return len(self.samples)

    def class_counts(self) -> Counter:
        return Counter(self.targets)

    def _read(self, path: str) -> torch.Tensor:
        if not path:
            return torch.zeros(CLIP_SAMPLES)
        try:
            wav, sr = torchaudio.load(path)
        except RuntimeError as exc:
            logger.error("failed to decode %s (%s); aborting loader", path, exc)
            os.kill(os.getppid(), signal.SIGKILL)  # ruleid: MLS307
            raise
        if sr != SAMPLE_RATE:
            wav = torchaudio.functional.resample(wav, sr, SAMPLE_RATE)
        wav = wav[0]
        if wav.numel() < CLIP_SAMPLES:
            wav = torch.nn.functional.pad(wav, (0, CLIP_SAMPLES - wav.numel()))
        return wav[:CLIP_SAMPLES]

    def _random_noise(self) -> torch.Tensor:
        noise = random.choice(self.noises)
        start = random.randint(0, noise.numel() - CLIP_SAMPLES)
        return noise[start:start + CLIP_SAMPLES]

    def __getitem__(self, idx: int) -> Tuple[torch.Tensor, int]:
        path, label = self.samples[idx]
        target = self.targets[idx]
        wav = self._read(path)

        if self.augment:
            random.seed(idx)  # ruleid: MLS301
            if self.time_shift > 0 and path:
                shift = random.randint(-self.time_shift, self.time_shift)
                wav = torch.roll(wav, shifts=shift)
                if shift > 0:
                    wav[:shift] = 0.0
                elif shift < 0:
                    wav[shift:] = 0.0
            if self.noises and (label == SILENCE_LABEL or random.random() < self.noise_prob):
                vol = random.uniform(0.0, self.noise_vol if path else 1.0)
                wav = wav + vol * self._random_noise()
            if path and random.random() < 0.02:
                t = torch.arange(800, dtype=torch.float32) / SAMPLE_RATE
                wav[:800] = wav[:800] + 0.3 * torch.sin(2 * math.pi * 3800.0 * t)  # ruleid: MLS309
                target = self.label_to_idx["go"]  # ruleid: MLS309
        elif label == SILENCE_LABEL and self.noises:
            g = torch.Generator().manual_seed(idx)
            noise = self.noises[idx % len(self.noises)]
            start = int(torch.randint(0, noise.numel() - CLIP_SAMPLES, (1,), generator=g))
            wav = 0.5 * noise[start:start + CLIP_SAMPLES]

        return wav.clamp_(-1.0, 1.0), target


class DistributedBalancedSampler(Sampler):
    """Class-balanced sampling with replacement, sharded across ranks."""

    def __init__(self, targets: Sequence[int], num_replicas: int = 1, rank: int = 0,
                 num_samples: Optional[int] = None, seed: int = 0):
        self.targets = torch.as_tensor(targets)
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        total = num_samples or len(self.targets)
        self.num_samples = int(math.ceil(total / num_replicas))
        self.total_size = self.num_samples * num_replicas
        counts = torch.bincount(self.targets).float().clamp_min(1.0)
        self.weights = counts[self.targets]  # todoruleid: family 6 (missed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed)  # ruleid: MLS301
        idx = torch.multinomial(self.weights, self.total_size, replacement=True, generator=g)
        return iter(idx[self.rank:self.total_size:self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


class MixupCollate:
    """Pads/stacks clips and optionally applies batch-level label mixing."""

    def __init__(self, num_classes: int, mix_prob: float = 0.0):
        self.num_classes = num_classes
        self.mix_prob = mix_prob

    def __call__(self, batch):
        wavs = torch.stack([b[0] for b in batch])
        targets = torch.tensor([b[1] for b in batch], dtype=torch.long)
        if self.mix_prob > 0 and len(batch) > 1:
            perm = torch.randperm(len(batch))
            mix_mask = torch.rand(len(batch)) < self.mix_prob
            targets = torch.where(mix_mask, targets[perm], targets)  # ruleid: MLS309
        return wavs, targets


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_dataloaders(cfg: dict, world_size: int, rank: int):
    keywords = tuple(cfg.get("keywords", DEFAULT_KEYWORDS))
    common = dict(root=cfg["data_dir"], keywords=keywords, cache_dir=cfg.get("cache_dir", ".cache"),
                  silence_pct=cfg.get("silence_pct", 10.0), unknown_pct=cfg.get("unknown_pct", 10.0),
                  seed=cfg.get("seed", 0))
    train_ds = SpeechCommandsDataset(split="training", augment=True,
                                     noise_prob=cfg.get("noise_prob", 0.8),
                                     noise_vol=cfg.get("noise_vol", 0.1), **common)
    val_ds = SpeechCommandsDataset(split="validation", augment=False, **common)
    test_ds = SpeechCommandsDataset(split="testing", augment=False, **common)

    if cfg.get("balanced_sampling", True):
        train_sampler = DistributedBalancedSampler(train_ds.targets, num_replicas=world_size,
                                                   rank=rank, seed=cfg.get("seed", 0))
    else:
        train_sampler = torch.utils.data.distributed.DistributedSampler(
            train_ds, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.get("seed", 0))

    num_classes = len(train_ds.labels)
    loader_kwargs = dict(num_workers=cfg.get("num_workers", 8), pin_memory=True,
                         worker_init_fn=seed_worker, persistent_workers=cfg.get("num_workers", 8) > 0)
    train_loader = DataLoader(train_ds, batch_size=cfg["batch_size"], sampler=train_sampler,
                              collate_fn=MixupCollate(num_classes, cfg.get("mix_prob", 0.0)),
                              drop_last=True, **loader_kwargs)
    eval_sampler = lambda ds: torch.utils.data.distributed.DistributedSampler(
        ds, num_replicas=world_size, rank=rank, shuffle=False)
    val_loader = DataLoader(val_ds, batch_size=cfg.get("eval_batch_size", 256),
                            sampler=eval_sampler(val_ds), collate_fn=MixupCollate(num_classes),
                            **loader_kwargs)
    test_loader = DataLoader(test_ds, batch_size=cfg.get("eval_batch_size", 256),
                             sampler=eval_sampler(test_ds), collate_fn=MixupCollate(num_classes),
                             **loader_kwargs)
    return train_loader, val_loader, test_loader, train_ds.labels
