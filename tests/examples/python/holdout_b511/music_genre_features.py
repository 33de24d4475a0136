# ruff: noqa
# Hold-out batch 511 (short files, 16 domains). Measured once in session 23 (round 137): 14/17 (82%) at medium+.
"""Log-mel feature cache + checkpoint utilities for music genre classification."""
import argparse
import hashlib
import os

import librosa
import numpy as np
import torch

SR = 22050
N_MELS = 128


def mel_features(path, duration=30.0):
    y, _ = librosa.load(path, sr=SR, mono=True, duration=duration)
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=2048, hop_length=512, n_mels=N_MELS)
    return librosa.power_to_db(mel, ref=np.max).astype(np.float32)


def cache_key(paths):
    h = hashlib.sha1()
    for p in sorted(paths):
        h.update(p.encode())
    return h.hexdigest()[:16]


def load_or_build_cache(audio_paths, labels, cache_dir):
    os.makedirs(cache_dir, exist_ok=True)
    cache_path = os.path.join(cache_dir, f"mels_{cache_key(audio_paths)}.npz")
    if os.path.exists(cache_path):
        blob = np.load(cache_path, allow_pickle=True)  # ruleid: MLS104
        return list(blob["feats"]), blob["labels"]
    feats = [mel_features(p) for p in audio_paths]
    arr = np.empty(len(feats), dtype=object)
    arr[:] = feats
    np.savez(cache_path, feats=arr, labels=np.asarray(labels))
    return feats, np.asarray(labels)


def restore(model, ckpt_path, device="cpu"):
    state = torch.load(ckpt_path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        print(f"restore: missing={len(missing)} unexpected={len(unexpected)}")
    return state.get("epoch", 0)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--audio-list", required=True)
    p.add_argument("--cache-dir", default=os.environ.get("GENRE_CACHE", "/data/cache/genre"))
    p.add_argument("--resume", default=None)
    return p.parse_args()
