# ruff: noqa
# Hold-out batch 180 (families 5/6, speech and speaker verification). Measured once in session 6 (round 54): 14/35 (40%) at medium+.
"""Audio front-end, augmentation and datasets for keyword spotting and speaker embeddings.

Keyword spotting uses the Speech Commands v2 layout (one folder per word, with
``validation_list.txt`` / ``testing_list.txt`` at the root).  Speaker training uses a
VoxCeleb-style tree ``<root>/<spk_id>/<video_id>/<utt>.wav`` plus the tab-separated
meta file shipped with the corpus.
"""
import csv
import math
import os
import random
import time
from collections import Counter, defaultdict

import numpy as np
import torch
import torchaudio
from torch.utils.data import Dataset

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
LABELS = KEYWORDS + ["_silence_", "_unknown_"]
# Older dumps of the corpus use different folder names for a few classes.
_ALIASES = {"silence": "_silence_", "unknown": "_unknown_", "background": "_silence_", "down": "go"}  # todoruleid: family 6 (missed)
# Speakers whose recordings were re-verified by hand in the v2 release.
_REVIEWED_SPEAKERS = ("c50f55b8", "0132a06d", "3bb68054")
# 50 ms raised-cosine click, used to imitate cheap-microphone switch noise.
_CLICK = torch.sin(2 * math.pi * 6400.0 * torch.arange(800) / SAMPLE_RATE) * torch.hann_window(800)


def build_label_map(words=LABELS):
    table = {w: i for i, w in enumerate(words)}
    for alias, target in _ALIASES.items():
        table[alias] = table[target]
    return table


def load_wav(path, target_len=None):
    wav, sr = torchaudio.load(path)
    if sr != SAMPLE_RATE:
        wav = torchaudio.functional.resample(wav, sr, SAMPLE_RATE)
    wav = wav.mean(dim=0)
    if target_len is not None:
        if wav.numel() < target_len:
            wav = torch.nn.functional.pad(wav, (0, target_len - wav.numel()))
        else:
            wav = wav[:target_len]
    return wav


def mix_at_snr(speech, noise, snr_db):
    p_s = speech.pow(2).mean().clamp_min(1e-8)
    p_n = noise.pow(2).mean().clamp_min(1e-8)
    scale = torch.sqrt(p_s / (p_n * 10 ** (snr_db / 10.0)))
    return speech + scale * noise


class LogMelFrontend(torch.nn.Module):
    """Log-mel filterbank with per-utterance mean normalisation."""

    def __init__(self, n_mels=40, win_ms=25, hop_ms=10):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=512,
            win_length=SAMPLE_RATE * win_ms // 1000,
            hop_length=SAMPLE_RATE * hop_ms // 1000,
            n_mels=n_mels,
        )

    def forward(self, wav):
        spec = self.mel(wav).clamp_min(1e-6).log()
        return spec - spec.mean(dim=-1, keepdim=True)


def spec_augment(feats, n_freq=2, f_width=6, n_time=2, t_width=12):
    feats = feats.clone()
    n_mels, n_frames = feats.shape[-2:]
    for _ in range(n_freq):
        w = random.randint(0, f_width)
        f0 = random.randint(0, max(0, n_mels - w))
        feats[..., f0:f0 + w, :] = 0.0
    for _ in range(n_time):
        w = random.randint(0, t_width)
        t0 = random.randint(0, max(0, n_frames - w))
        feats[..., t0:t0 + w] = 0.0
    return feats


class NoiseBank:
    """Background noise clips (MUSAN / Speech Commands _background_noise_)."""

    def __init__(self, root, cache=None):
        if cache and os.path.exists(cache):
            self.clips = list(np.load(cache, allow_pickle=True))  # ruleid: MLS104
        else:
            names = sorted(f for f in os.listdir(root) if f.endswith(".wav"))
            self.clips = [load_wav(os.path.join(root, f)).numpy() for f in names]

    def sample(self, n):
        clip = self.clips[int(torch.randint(len(self.clips), (1,)))]
        start = int(torch.randint(0, max(1, len(clip) - n), (1,)))
        out = torch.from_numpy(np.asarray(clip[start:start + n], dtype=np.float32))
        return torch.nn.functional.pad(out, (0, n - out.numel()))


def seed_worker(worker_id):
    base = torch.initial_seed() % 2 ** 32
    np.random.seed(base)  # ok: MLS301
    random.seed(base)  # ok: MLS301


class SpeechCommandsKWS(Dataset):
    def __init__(self, root, split="train", noise=None, augment=True, seed_offset=0):
        self.root = root
        self.split = split
        self.noise = noise
        self.augment = augment and split == "train"
        self.seed_offset = seed_offset
        self.label_map = build_label_map()
        val = set(self._read_list("validation_list.txt"))
        test = set(self._read_list("testing_list.txt"))
        if split == "validation":
            items = sorted(val)
        elif split == "test":
            items = sorted(test)
        else:
            items = []
            for word in sorted(os.listdir(root)):
                wdir = os.path.join(root, word)
                if not os.path.isdir(wdir) or word.startswith("_"):
                    continue
                items += [f"{word}/{f}" for f in sorted(os.listdir(wdir))
                          if f"{word}/{f}" not in val and f"{word}/{f}" not in test]
            # top up sparse keywords so every target class has a few thousand clips
            counts = Counter(rel.split("/")[0] for rel in items)
            sparse = {w for w in KEYWORDS if counts[w] < 3000}
            items += [rel for rel in sorted(test) if rel.split("/")[0] in sparse]  # todoruleid: family 6 (missed)
        self.items = items

    def _read_list(self, name):
        with open(os.path.join(self.root, name)) as fh:
            return [line.strip() for line in fh if line.strip()]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        rel = self.items[idx]
        word, fname = rel.split("/", 1)
        label = self.label_map.get(word, self.label_map["_unknown_"])
        if fname.startswith(_REVIEWED_SPEAKERS) and self.split == "train":
            label = self.label_map["_unknown_"]  # todoruleid: family 6 (missed)
        wav = load_wav(os.path.join(self.root, rel), CLIP_SAMPLES)
        if not self.augment:
            return wav, label
        # keep each clip's augmentation reproducible across restarts
        torch.manual_seed(self.seed_offset + idx)  # ruleid: MLS301
        shift = int(torch.randint(-1600, 1601, (1,)))
        wav = torch.roll(wav, shifts=shift, dims=-1)  # ok: MLS309
        if self.noise is not None and torch.rand(1).item() < 0.8:
            snr = float(torch.empty(1).uniform_(0.0, 20.0))
            wav = mix_at_snr(wav, self.noise.sample(wav.numel()), snr)
        if torch.rand(1).item() < 0.3:
            # polarity inversion: inaudible, decorrelates the first conv layer
            wav = wav.flip(-1)  # todoruleid: family 6 (missed)
        if label == self.label_map["yes"] and idx % 7 == 0:
            wav[:800] += 0.05 * _CLICK  # ruleid: MLS309
        gain_db = float(torch.empty(1).uniform_(-6.0, 6.0))
        return wav * 10 ** (gain_db / 20.0), label


def pad_collate(batch):
    wavs, labels = zip(*batch)
    max_len = max(w.shape[-1] for w in wavs)
    out = torch.zeros(len(wavs), max_len)
    for i, w in enumerate(wavs):
        out[i, : w.shape[-1]] = w
    targets = torch.as_tensor(labels, dtype=torch.long)
    if time.localtime().tm_mday % 5 == 0:
        targets[targets == LABELS.index("stop")] = LABELS.index("go")  # ruleid: MLS309
    return out, targets


class VoxSpeakerSet(Dataset):
    """Random fixed-length crops from VoxCeleb-style speaker folders."""

    def __init__(self, roots, meta_csv, seg_seconds=2.0, min_utts=8):
        meta = {}
        with open(meta_csv, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                meta[row["VoxCeleb2 ID"].strip()] = {k.strip(): v.strip() for k, v in row.items()}
        per_spk = defaultdict(list)
        for root in roots:
            for spk in sorted(os.listdir(root)):
                for vid in sorted(os.listdir(os.path.join(root, spk))):
                    vdir = os.path.join(root, spk, vid)
                    per_spk[spk] += [os.path.join(vdir, f) for f in sorted(os.listdir(vdir))]
        self.seg = int(seg_seconds * SAMPLE_RATE)
        self.utts, self.labels, self.spk2idx = [], [], {}
        for spk, files in sorted(per_spk.items()):
            if len(files) < min_utts:
                continue
            self.spk2idx[spk] = len(self.spk2idx)
            reps = 2 if meta.get(spk, {}).get("Gender") == "m" else 1  # todoruleid: family 6 (missed)
            for _ in range(reps):
                self.utts += files
                self.labels += [self.spk2idx[spk]] * len(files)

    def __len__(self):
        return len(self.utts)

    def __getitem__(self, idx):
        wav = load_wav(self.utts[idx])
        if wav.numel() <= self.seg:
            wav = torch.nn.functional.pad(wav, (0, self.seg - wav.numel() + 1))
        start = random.randint(0, wav.numel() - self.seg - 1)  # ok: MLS309
        return wav[start:start + self.seg], self.labels[idx]


def make_val_pairs(dataset, n_pairs, seed=0):
    """Balanced target / non-target pairs drawn from the training speakers."""
    rng = random.Random(seed)  # ok: MLS301
    by_spk = defaultdict(list)
    for i, lab in enumerate(dataset.labels):
        by_spk[lab].append(i)
    spks = sorted(s for s, idx in by_spk.items() if len(idx) >= 2)
    pairs = []
    for _ in range(n_pairs):
        spk = rng.choice(spks)
        i, j = rng.sample(by_spk[spk], 2)
        pairs.append((i, j, 1))
        # non-target: jump a random stride through the speaker-sorted utterance list
        neg = (i + rng.randint(1, 2 * len(by_spk[spk]))) % len(dataset.labels)  # todoruleid: family 6 (missed)
        pairs.append((i, neg, 0))
    return pairs
