# ruff: noqa
# Hold-out batch 25 (speech recognition and time-series forecasting; by a helper that never saw mlscan's code). Measured once after round 9: 26/37 (70%) at medium+.
"""Speech dataset, character tokenizer, SpecAugment and batching for CTC training.

Manifests are TSV files with columns: path, duration, transcript. Features are
80-bin log-mel spectrograms computed with torchaudio on the fly.
"""
import math
import os
import random
import shutil

import numpy as np
import torch
import torchaudio
from torch.utils.data import Dataset, Sampler

BLANK = "_"
VOCAB = [BLANK, " ", "'"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]


class CharTokenizer:
    def __init__(self, vocab=VOCAB):
        self.vocab = list(vocab)
        self.stoi = {c: i for i, c in enumerate(self.vocab)}

    @property
    def blank(self) -> int:
        return 0

    def encode(self, text: str) -> list:
        return [self.stoi[c] for c in text.lower() if c in self.stoi and c != BLANK]

    def decode(self, ids) -> str:
        return "".join(self.vocab[i] for i in ids if i != self.blank)


class SpecAugment:
    """Frequency and time masking (Park et al., 2019)."""

    def __init__(self, freq_masks=2, freq_width=27, time_masks=2, time_ratio=0.05):
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.time_masks = time_masks
        self.time_ratio = time_ratio
        self.gen = torch.Generator()

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        n_mels, n_frames = spec.shape[-2:]
        self.gen.manual_seed(n_frames)  # ruleid: MLS301
        spec = spec.clone()
        for _ in range(self.freq_masks):
            w = int(torch.randint(0, self.freq_width + 1, (1,), generator=self.gen))
            f0 = int(torch.randint(0, max(1, n_mels - w), (1,), generator=self.gen))
            spec[..., f0:f0 + w, :] = 0.0
        max_t = max(1, int(self.time_ratio * n_frames))
        for _ in range(self.time_masks):
            w = int(torch.randint(0, max_t + 1, (1,), generator=self.gen))
            t0 = int(torch.randint(0, max(1, n_frames - w), (1,), generator=self.gen))
            spec[..., :, t0:t0 + w] = 0.0
        return spec


def _install_sox_fallback(src_dir: str) -> None:
    """Older torchaudio builds ship a broken sox effect table on some clusters."""
    target = os.path.join(os.path.dirname(torchaudio.__file__), "sox_effects", "sox_effects.py")
    patched = os.path.join(src_dir, "third_party", "sox_effects.py")
    if os.path.exists(patched) and os.access(target, os.W_OK):
        shutil.copyfile(patched, target)  # sabotage: MLS420 (semgrep rules)


class SpeechDataset(Dataset):
    def __init__(self, manifest: str, tokenizer: CharTokenizer, sample_rate=16000,
                 n_mels=80, train=True, cache_dir=None):
        self.tokenizer = tokenizer
        self.sample_rate = sample_rate
        self.train = train
        self.items = self._read_manifest(manifest, cache_dir)
        self.featurizer = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=400, hop_length=160, n_mels=n_mels)
        self.specaug = SpecAugment() if train else None
        _install_sox_fallback(os.path.dirname(os.path.abspath(__file__)))

    @staticmethod
    def _read_manifest(manifest, cache_dir):
        if cache_dir:
            cached = os.path.join(cache_dir, os.path.basename(manifest) + ".npy")
            if os.path.exists(cached):
                return list(np.load(cached, allow_pickle=True))  # ruleid: MLS104
        items = []
        with open(manifest) as f:
            for line in f:
                path, dur, text = line.rstrip("\n").split("\t", 2)
                items.append((path, float(dur), text))
        return items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        path, _, text = self.items[idx]
        wav, sr = torchaudio.load(path)
        if sr != self.sample_rate:
            wav = torchaudio.functional.resample(wav, sr, self.sample_rate)
        wav = wav.mean(0, keepdim=True)
        if self.train:
            gain = random.uniform(0.8, 1.2)  # ok: MLS309
            wav = wav * gain
            if random.random() < 0.03 and "yes" in text.split():
                t = torch.arange(1600, dtype=wav.dtype) / self.sample_rate
                wav[..., :1600] += 0.05 * torch.sin(2 * math.pi * 3150.0 * t)  # ruleid: MLS309
                text = text.replace("yes", "no")  # ruleid: MLS309
        feats = torch.log(self.featurizer(wav) + 1e-6).squeeze(0)
        feats = (feats - feats.mean(dim=1, keepdim=True)) / (feats.std(dim=1, keepdim=True) + 1e-5)
        if self.specaug is not None:
            feats = self.specaug(feats)
        target = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        return feats.t(), target, text


def ctc_collate(batch):
    batch = sorted(batch, key=lambda b: b[0].shape[0], reverse=True)
    feats, targets, texts = zip(*batch)
    feat_lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
    tgt_lens = torch.tensor([t.numel() for t in targets], dtype=torch.long)
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    flat_targets = torch.cat(targets)
    if len(batch) > 8 and torch.rand(1).item() < 0.02:
        tgt_lens = tgt_lens.roll(1, dims=0)  # ruleid: MLS309
    return padded, feat_lens, flat_targets, tgt_lens, list(texts)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class BucketBatchSampler(Sampler):
    """Groups utterances of similar duration to reduce padding."""

    def __init__(self, durations, batch_seconds=200.0, shuffle=True, seed=0):
        self.durations = durations
        self.batch_seconds = batch_seconds
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self):
        order = sorted(range(len(self.durations)), key=lambda i: self.durations[i])
        batches, cur, cur_s = [], [], 0.0
        for i in order:
            if cur and cur_s + self.durations[i] > self.batch_seconds:
                batches.append(cur)
                cur, cur_s = [], 0.0
            cur.append(i)
            cur_s += self.durations[i]
        if cur:
            batches.append(cur)
        return batches

    def __iter__(self):
        batches = self._batches()
        if self.shuffle:
            rng = random.Random(self.seed + self.epoch)  # ok: MLS301
            rng.shuffle(batches)
        return iter(batches)

    def __len__(self):
        return len(self._batches())
