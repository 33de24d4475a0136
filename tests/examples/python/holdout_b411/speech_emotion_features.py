# ruff: noqa
# Hold-out batch 411 (16 short files, one domain each). Measured once in session 16 (round 112): 14/17 (82%) at medium+.
"""Handcrafted acoustic features (MFCC + prosody) for speech emotion recognition."""
import hashlib
import os
import urllib.request

import librosa
import numpy as np
import torch

SR = 16000
N_MFCC = 40


def extract_features(wav_path: str) -> np.ndarray:
    y, _ = librosa.load(wav_path, sr=SR, mono=True)
    y, _ = librosa.effects.trim(y, top_db=30)
    mfcc = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=N_MFCC)
    delta = librosa.feature.delta(mfcc)
    f0 = librosa.yin(y, fmin=60, fmax=400, sr=SR)
    rms = librosa.feature.rms(y=y)[0]
    zcr = librosa.feature.zero_crossing_rate(y)[0]
    stats = [mfcc.mean(1), mfcc.std(1), delta.mean(1), delta.std(1),
             [np.nanmean(f0), np.nanstd(f0), rms.mean(), rms.std(), zcr.mean()]]
    return np.concatenate([np.asarray(s, dtype=np.float32) for s in stats])


class FeatureStore:
    """Caches per-utterance feature vectors; can be seeded from a shared team cache."""

    def __init__(self, cache_dir: str, shared_url: str = None, stats_path: str = None):
        self.cache_dir = cache_dir
        os.makedirs(cache_dir, exist_ok=True)
        self.table = {}
        if shared_url:
            local = os.path.join(cache_dir, "shared_" + hashlib.md5(shared_url.encode()).hexdigest() + ".npy")
            if not os.path.exists(local):
                urllib.request.urlretrieve(shared_url, local)
            self.table.update(np.load(local, allow_pickle=True).item())  # ruleid: MLS104
        self.mean = self.std = None
        if stats_path and os.path.exists(stats_path):
            stats = torch.load(stats_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            self.mean, self.std = stats["mean"].numpy(), stats["std"].numpy()

    def get(self, wav_path: str) -> np.ndarray:
        key = os.path.basename(wav_path)
        if key not in self.table:
            self.table[key] = extract_features(wav_path)
        feats = self.table[key]
        if self.mean is not None:
            feats = (feats - self.mean) / (self.std + 1e-6)
        return feats
