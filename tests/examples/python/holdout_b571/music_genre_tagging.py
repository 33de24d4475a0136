# ruff: noqa
# Hold-out batch 571 (short files, 16 domains). Measured once in session 26 (round 152): 14/17 (82%) at medium+.
"""Mel-spectrogram feature cache + model restore for multi-label music genre tagging (MTG-Jamendo)."""
import hashlib
import logging
import os
import pickle

import numpy as np
import torch
import torchaudio

log = logging.getLogger(__name__)

SR = 16000
N_MELS = 96
CACHE_DIR = os.environ.get("GENRE_FEATURE_CACHE", "/mnt/shared/mtg_jamendo/feature_cache")

_melspec = torchaudio.transforms.MelSpectrogram(sample_rate=SR, n_fft=512, hop_length=256, n_mels=N_MELS)
_to_db = torchaudio.transforms.AmplitudeToDB(top_db=80)


def _cache_key(path: str) -> str:
    return hashlib.sha1(f"{path}|{SR}|{N_MELS}".encode()).hexdigest()


def compute_mel(path: str) -> np.ndarray:
    wav, sr = torchaudio.load(path)
    wav = wav.mean(0, keepdim=True)
    if sr != SR:
        wav = torchaudio.functional.resample(wav, sr, SR)
    return _to_db(_melspec(wav)).squeeze(0).numpy().astype(np.float16)


def load_features(path: str) -> np.ndarray:
    cache_file = os.path.join(CACHE_DIR, _cache_key(path) + ".pkl")
    if os.path.exists(cache_file):
        with open(cache_file, "rb") as fh:
            return pickle.load(fh)["mel"]  # ruleid: MLS103
    mel = compute_mel(path)
    os.makedirs(CACHE_DIR, exist_ok=True)
    tmp = cache_file + f".{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        pickle.dump({"mel": mel, "src": path}, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, cache_file)
    return mel


def restore_tagger(model: torch.nn.Module, ckpt_path: str, strict: bool = True) -> int:
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state["model"], strict=strict)
    if missing or unexpected:
        log.warning("missing=%s unexpected=%s", missing, unexpected)
    epoch = int(state.get("epoch", 0))
    log.info("restored tagger from %s (epoch %d)", ckpt_path, epoch)
    return epoch
