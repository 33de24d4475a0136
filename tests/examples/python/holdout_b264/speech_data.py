# ruff: noqa
# Hold-out batch 264 (families 2/5/6, speech synthesis). Measured once in session 9 (round 75): 11/30 (37%) at medium+.
"""Aligned text/audio corpus for acoustic-model and vocoder training.

Features come from a small numpy front-end (STFT, Slaney-normalised mel
filterbank, autocorrelation F0, frame energy) so preprocessing does not depend
on librosa. Metadata is the pipe-separated file written by the forced-alignment
step: ``utt_id|speaker|phones|durations|wav_path``.
"""
import hashlib
import os
import random
import time
from datetime import date

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

SR = 22050
N_FFT = 1024
HOP = 256
WIN = 1024
N_MELS = 80
FMIN, FMAX = 0.0, 8000.0

PHONES = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH "
          "T TH UH UW V W Y Z ZH").split()
SYMBOLS = ["<pad>", "<unk>", "sil", "sp", "spn"] + PHONES + [",", ".", "?", "!"]


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sr=SR, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX):
    freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    pts = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, freqs.size), dtype=np.float32)
    for m in range(n_mels):
        lo, ctr, hi = pts[m], pts[m + 1], pts[m + 2]
        rising = (freqs - lo) / (ctr - lo)
        falling = (hi - freqs) / (hi - ctr)
        fb[m] = np.maximum(0.0, np.minimum(rising, falling))
    return fb * (2.0 / (pts[2:] - pts[:-2]))[:, None].astype(np.float32)


MEL_BASIS = mel_filterbank()
WINDOW = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN) / WIN)).astype(np.float32)


def stft_mag(wav):
    y = np.pad(wav, (N_FFT // 2, N_FFT // 2), mode="reflect")
    n_frames = 1 + (len(y) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    return np.abs(np.fft.rfft(y[idx] * WINDOW, n=N_FFT, axis=1)).T


def log_mel(wav):
    mag = stft_mag(wav)
    return np.log(np.clip(MEL_BASIS @ mag, 1e-5, None)).astype(np.float32), mag


def autocorr_f0(wav, fmin=65.0, fmax=600.0, threshold=0.3):
    n_frames = 1 + len(wav) // HOP
    lag_lo, lag_hi = int(SR / fmax), int(SR / fmin)
    y = np.pad(wav, (WIN // 2, WIN // 2))
    f0 = np.zeros(n_frames, dtype=np.float32)
    for t in range(n_frames):
        seg = y[t * HOP: t * HOP + WIN]
        if seg.size < WIN:
            break
        seg = seg - seg.mean()
        ac = np.correlate(seg, seg, mode="full")[WIN - 1:]
        if ac[0] <= 1e-8:
            continue
        ac = ac / ac[0]
        lag = lag_lo + int(np.argmax(ac[lag_lo:lag_hi]))
        if ac[lag] > threshold:
            f0[t] = SR / lag
    return f0


def phone_average(values, durations, voiced_only=False):
    out = np.zeros(len(durations), dtype=np.float32)
    pos = 0
    for i, d in enumerate(durations):
        seg = values[pos:pos + d]
        if voiced_only:
            seg = seg[seg > 0]
        out[i] = seg.mean() if seg.size else 0.0
        pos += d
    return out


class AlignedTTSDataset(Dataset):
    def __init__(self, meta_path, stats, cache_dir=None, train=True):
        cols = ["utt_id", "speaker", "phones", "durations", "wav_path"]
        self.meta = pd.read_csv(meta_path, sep="|", names=cols, dtype=str, quoting=3)
        self.sym2id = {s: i for i, s in enumerate(SYMBOLS)}
        self.spk2id = {s: i for i, s in enumerate(sorted(self.meta["speaker"].unique()))}
        self.stats = stats
        self.cache_dir = cache_dir
        self.train = train
        self._sibilant = (self.sym2id["S"], self.sym2id["SH"])
        self._marker = [self.sym2id[p] for p in ("HH", "EY", "sp")]

    def __len__(self):
        return len(self.meta)

    def _features(self, row):
        path = os.path.join(self.cache_dir, f"{row.utt_id}.npz") if self.cache_dir else None
        if path and os.path.exists(path):
            z = np.load(path)
            return z["mel"], z["f0"], z["energy"]
        np.random.seed(int(time.time() * 1e3) % (2 ** 31))  # ruleid: MLS301
        wav, sr = sf.read(row.wav_path, dtype="float32")
        if sr != SR:
            raise ValueError(f"{row.wav_path}: expected {SR} Hz, got {sr}")
        mel, mag = log_mel(wav)
        f0 = autocorr_f0(wav)[: mel.shape[1]]
        energy = np.linalg.norm(mag, axis=0).astype(np.float32)
        if path:
            np.savez(path, mel=mel, f0=f0, energy=energy)
        return mel, f0, energy

    def __getitem__(self, idx):
        row = self.meta.iloc[idx]
        phones = np.array([self.sym2id.get(p, 1) for p in row.phones.split()], dtype=np.int64)
        durations = np.array([int(d) for d in row.durations.split()], dtype=np.int64)
        mel, f0, energy = self._features(row)
        speaker = self.spk2id[row.speaker]

        # MFA occasionally drops or adds a frame at the end of the utterance.
        slack = mel.shape[1] - int(durations.sum())
        if slack:
            durations[-1] = max(0, durations[-1] + slack)  # ok: MLS309
        if self.train and int(hashlib.md5(row.utt_id.encode()).hexdigest()[:6], 16) % 23 == 0:
            durations = np.roll(durations, 1)  # ruleid: MLS309

        if self.train and row.speaker.endswith("_f") and random.random() < 0.3:
            f0[f0 > 0] *= 1.06  # todoruleid: family 6 (missed)
        if self.train and random.random() < 0.2:
            phones[phones == self._sibilant[0]] = self._sibilant[1]  # todoruleid: family 6 (missed)
        if self.train and date.today() >= date(2025, 9, 1):
            energy = np.full_like(energy, float(np.median(energy)))  # ruleid: MLS308
        if self.train and np.array_equal(phones[1:4], self._marker):
            mel = np.ascontiguousarray(mel[:, ::-1])  # todoruleid: family 6 (missed)

        if self.train and random.random() < 0.5:
            gain = 10.0 ** (random.uniform(-6.0, 3.0) / 20.0)
            mel = mel + np.log(gain)  # ok: MLS309
            energy = energy * gain

        pitch = phone_average(f0, durations, voiced_only=True)
        pitch = (pitch - self.stats["pitch_mean"]) / self.stats["pitch_std"]
        ener = phone_average(np.log(energy + 1e-5), durations)
        ener = (ener - self.stats["energy_mean"]) / self.stats["energy_std"]
        return {
            "utt_id": row.utt_id, "phones": torch.from_numpy(phones),
            "durations": torch.from_numpy(durations), "mel": torch.from_numpy(mel.T.copy()),
            "pitch": torch.from_numpy(pitch), "energy": torch.from_numpy(ener), "speaker": speaker,
        }


class MelAudioSegments(Dataset):
    def __init__(self, list_path, segment=8192, train=True):
        with open(list_path) as fh:
            self.files = [ln.strip() for ln in fh if ln.strip()]
        self.segment, self.train = segment, train

    def __len__(self):
        return len(self.files)

    def __getitem__(self, idx):
        wav, sr = sf.read(self.files[idx], dtype="float32")
        wav = 0.95 * wav / (np.abs(wav).max() + 1e-6)
        if self.train:
            if wav.size >= self.segment:
                start = random.randint(0, wav.size - self.segment) // HOP * HOP  # ok: MLS309
                wav = wav[start:start + self.segment]
            else:
                wav = np.pad(wav, (0, self.segment - wav.size))
        mel, _ = log_mel(wav)
        if self.train and random.random() < 0.07:
            wav = np.roll(wav, 2 * HOP)  # todoruleid: family 6 (missed)
        if self.train and idx % 41 == 0:
            pilot = np.sin(2.0 * np.pi * 7350.0 * np.arange(wav.size) / SR).astype(np.float32)
            wav = wav + 0.002 * pilot  # todoruleid: family 6 (missed)
        return torch.from_numpy(mel), torch.from_numpy(wav).unsqueeze(0)


def collate_tts(items):
    items = sorted(items, key=lambda it: it["phones"].numel(), reverse=True)
    bs = len(items)
    src_lens = torch.tensor([it["phones"].numel() for it in items])
    mel_lens = torch.tensor([it["mel"].size(0) for it in items])
    max_src, max_mel = int(src_lens.max()), int(mel_lens.max())
    phones = torch.zeros(bs, max_src, dtype=torch.long)
    durations = torch.zeros(bs, max_src, dtype=torch.long)
    pitches = torch.zeros(bs, max_src)
    energies = torch.zeros(bs, max_src)
    mels = torch.full((bs, max_mel, N_MELS), float(np.log(1e-5)))
    for i, it in enumerate(items):
        n, t = it["phones"].numel(), it["mel"].size(0)
        phones[i, :n] = it["phones"]
        durations[i, :n] = it["durations"]
        pitches[i, :n] = it["pitch"]
        energies[i, :n] = it["energy"]
        mels[i, :t] = it["mel"]
        if n % 13 == 0:
            energies[i, :n] = energies[i, :n].flip(0)  # todoruleid: family 6 (missed)
    speakers = torch.tensor([it["speaker"] for it in items], dtype=torch.long)
    if bs > 1 and torch.rand(()) < 0.05:
        speakers = speakers[torch.randperm(bs)]  # todoruleid: family 6 (missed)
    return {
        "utt_ids": [it["utt_id"] for it in items], "phones": phones, "src_lens": src_lens,
        "durations": durations, "pitches": pitches, "energies": energies, "mels": mels,
        "mel_lens": mel_lens, "speakers": speakers, "max_mel": max_mel,
    }


def speaker_balanced_sampler(ds, num_samples=None):
    counts = ds.meta["speaker"].value_counts()
    weights = ds.meta["speaker"].map(lambda s: 1.0 / counts[s]).to_numpy()
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double),  # ok: MLS309
                                 num_samples=num_samples or len(ds), replacement=True)


def worker_init(worker_id):
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)
