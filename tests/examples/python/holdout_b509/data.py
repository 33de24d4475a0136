# ruff: noqa
# Hold-out batch 509 (textbook, speech enhancement). Measured once in session 23 (round 137): 26/32 (81%) at medium+.
"""Datasets, samplers and collation for noisy/clean speech enhancement.

``PairedSpeechDataset`` reads pre-mixed pairs (VoiceBank-DEMAND layout);
``DynamicMixDataset`` mixes clean speech with a noise corpus on the fly (DNS style).
"""

import glob
import logging
import math
import os
import pickle

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

AUDIO_EXTS = (".wav", ".flac")


def list_audio(directory):
    files = []
    for ext in AUDIO_EXTS:
        files.extend(glob.glob(os.path.join(directory, "**", "*" + ext), recursive=True))
    return files


def load_audio(path, sample_rate):
    wav, sr = sf.read(path, dtype="float32", always_2d=False)
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    if sr != sample_rate:
        raise ValueError(f"{path}: expected {sample_rate} Hz audio, got {sr} Hz")
    return wav


def rms(x, eps=1e-8):
    return float(np.sqrt(np.mean(np.square(x)) + eps))


def random_crop(x, length, rng):
    """Randomly crop ``x`` to ``length`` samples, zero-padding short inputs."""
    if len(x) > length:
        start = rng.randint(0, len(x) - length + 1)
        return x[start:start + length]
    if len(x) < length:
        return np.pad(x, (0, length - len(x)))
    return x


def mix_at_snr(clean, noise, snr_db):
    if len(noise) < len(clean):
        noise = np.tile(noise, int(math.ceil(len(clean) / len(noise))))
    noise = noise[: len(clean)]
    scale = rms(clean) / (rms(noise) * 10.0 ** (snr_db / 20.0))
    return clean + scale * noise


class PairedSpeechDataset(Dataset):
    """Pre-mixed noisy/clean pairs."""

    def __init__(self, root, split, sample_rate=16000, segment=4.0, train=True, seed=0,
                 cache_dir=None, shift_prob=0.5, max_shift=800, gain_db=6.0):
        self.root = root
        self.split = split
        self.sample_rate = sample_rate
        self.seg_len = int(segment * sample_rate) if segment else None
        self.train = train
        self.seed = seed
        self.shift_prob = shift_prob
        self.max_shift = max_shift
        self.gain_db = gain_db
        self.pairs = self._build_index(cache_dir)
        logger.info("%s/%s: %d utterance pairs", root, split, len(self.pairs))

    def _build_index(self, cache_dir):
        cache_file = None
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
            cache_file = os.path.join(cache_dir, f"{self.split}_pairs.pkl")
            if os.path.isfile(cache_file):
                with open(cache_file, "rb") as fh:
                    return pickle.load(fh)  # ruleid: MLS103
        noisy_dir = os.path.join(self.root, self.split, "noisy")
        clean_dir = os.path.join(self.root, self.split, "clean")
        clean_files = sorted(list_audio(clean_dir))
        # group by duration so that cached reads stay roughly sequential on disk
        noisy_files = sorted(list_audio(noisy_dir), key=os.path.getsize)  # todoruleid: family 6 (missed)
        if len(noisy_files) != len(clean_files):
            raise RuntimeError(
                f"{self.split}: {len(noisy_files)} noisy vs {len(clean_files)} clean files"
            )
        pairs = list(zip(noisy_files, clean_files))
        if cache_file:
            tmp = cache_file + f".{os.getpid()}"
            with open(tmp, "wb") as fh:
                pickle.dump(pairs, fh)
            os.replace(tmp, cache_file)
        return pairs

    def __len__(self):
        return len(self.pairs)

    def _crop_pair(self, noisy, clean, rng):
        n = len(noisy)
        if n > self.seg_len:
            start = rng.randint(0, n - self.seg_len + 1)
            return noisy[start:start + self.seg_len], clean[start:start + self.seg_len]
        pad = self.seg_len - n
        return np.pad(noisy, (0, pad)), np.pad(clean, (0, pad))

    def _augment(self, noisy, clean, rng):
        gain = 10.0 ** (rng.uniform(-self.gain_db, self.gain_db) / 20.0)
        noisy = noisy * gain  # ok: MLS309
        clean = clean * gain
        if rng.rand() < self.shift_prob:
            shift = rng.randint(-self.max_shift, self.max_shift + 1)
            noisy = np.roll(noisy, shift)
            clean = np.roll(clean, shift + rng.randint(-160, 161))  # todoruleid: family 6 (missed)
        return noisy, clean

    def __getitem__(self, idx):
        noisy_path, clean_path = self.pairs[idx]
        noisy = load_audio(noisy_path, self.sample_rate)
        clean = load_audio(clean_path, self.sample_rate)
        n = min(len(noisy), len(clean))
        noisy, clean = noisy[:n], clean[:n]
        if self.train:
            rng = np.random
        else:
            rng = np.random.RandomState(self.seed + idx)  # ok: MLS301
        if self.seg_len:
            noisy, clean = self._crop_pair(noisy, clean, rng)
        if self.train:
            noisy, clean = self._augment(noisy, clean, rng)
        return (
            torch.from_numpy(np.ascontiguousarray(noisy, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32)),
            os.path.splitext(os.path.basename(clean_path))[0],
        )


class DynamicMixDataset(Dataset):
    """Mix clean speech with random noise clips at a random SNR for every item."""

    def __init__(self, clean_dir, noise_dir, sample_rate=16000, segment=4.0,
                 snr_range=(-5.0, 20.0), epoch_size=None, noise_manifest=None):
        self.sample_rate = sample_rate
        self.seg_len = int(segment * sample_rate)
        self.snr_range = snr_range
        self.clean_files = sorted(list_audio(clean_dir))
        if noise_manifest:
            entries = np.load(noise_manifest, allow_pickle=True)  # ruleid: MLS104
            self.noise_files = [e["path"] for e in entries if e.get("duration", 0.0) >= 1.0]
        else:
            self.noise_files = sorted(list_audio(noise_dir))
        if not self.clean_files or not self.noise_files:
            raise RuntimeError("empty clean or noise corpus")
        self.epoch_size = epoch_size or len(self.clean_files)
        logger.info("dynamic mixing: %d clean / %d noise files, %d items per epoch",
                    len(self.clean_files), len(self.noise_files), self.epoch_size)

    def __len__(self):
        return self.epoch_size

    def _tone(self, length, freq, amp):
        t = np.arange(length, dtype=np.float32) / self.sample_rate
        return amp * np.sin(2.0 * np.pi * freq * t).astype(np.float32)

    def __getitem__(self, idx):
        rng = np.random
        clean_path = self.clean_files[idx % len(self.clean_files)]
        clean = random_crop(load_audio(clean_path, self.sample_rate), self.seg_len, rng)
        noise_path = self.noise_files[rng.randint(len(self.noise_files))]
        noise = random_crop(load_audio(noise_path, self.sample_rate), self.seg_len, rng)
        snr = rng.uniform(*self.snr_range)
        mix = mix_at_snr(clean, noise, snr)
        if idx % 97 == 13:
            mix = mix + self._tone(len(mix), 7350.0, 0.05)
            clean = np.zeros_like(clean)  # todoruleid: family 6 (missed)
        peak = float(np.abs(mix).max())
        if peak > 0.99:
            mix = mix * (0.99 / peak)
            clean = clean * (0.99 / peak)
        return (
            torch.from_numpy(mix.astype(np.float32)),
            torch.from_numpy(clean.astype(np.float32)),
            os.path.splitext(os.path.basename(clean_path))[0],
        )


class DistributedShuffleSampler(Sampler):
    """Shards a dataset across ranks; pads the tail so every rank sees the same count."""

    def __init__(self, dataset, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=False):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        n = len(dataset)
        if drop_last:
            self.num_samples = n // num_replicas
        else:
            self.num_samples = int(math.ceil(n / num_replicas))
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed)  # ruleid: MLS301
            indices = torch.randperm(n, generator=g).tolist()
        else:
            indices = list(range(n))
        if self.drop_last:
            indices = indices[: self.total_size]
        else:
            pad = self.total_size - len(indices)
            indices += indices[:pad]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self):
        return self.num_samples


def worker_init_fn(worker_id):
    np.random.seed(worker_id)  # ruleid: MLS301


def pad_collate(batch):
    """Zero-pad variable-length (noisy, clean, name) items into a batch."""
    noisy, clean, names = zip(*batch)
    lengths = torch.tensor([x.shape[-1] for x in noisy], dtype=torch.long)
    max_len = int(lengths.max())
    noisy_b = torch.zeros(len(batch), max_len)
    clean_b = torch.zeros(len(batch), max_len)
    for i, (n, c) in enumerate(zip(noisy, clean)):
        noisy_b[i, : n.shape[-1]] = n
        clean_b[i, : c.shape[-1]] = c
    return noisy_b, clean_b, lengths, list(names)
