# ruff: noqa
# Hold-out batch 150 (adversarial TTS/ASR training). Measured once in session 5 (round 47): 22/35 (63%) at medium+.
"""Log-mel feature extraction and an on-disk feature cache for the vocoder / acoustic model.

Features are computed once per utterance and stored under ``cache_dir`` in a sub-folder keyed by a
fingerprint of the STFT parameters, so changing hop/window/mel settings invalidates the cache
automatically.  A couple of background threads can pre-warm the cache before training starts.
"""
from __future__ import annotations

import base64
import builtins
import functools
import hashlib
import json
import os
import pickle as _codec
import shutil
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torchaudio

# Default spectral post-filter shipped with the recipe (clamps log-mel to the ln(1e-5) floor).
_DEFAULT_POSTFILTER = "eJxLSU1TKMgvLtHI1bTiUgCCotSS0qI8hZL8ouQMveScxNwCjVwdhdzMPFtdQ0M9U0MjS00uAMe+D9Y="


@dataclass
class FeatureConfig:
    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: Optional[float] = 8000.0
    preemphasis: float = 0.0
    log_floor: float = 1e-5
    cache_dir: str = os.environ.get("TTS_FEATURE_CACHE", "/scratch/tts/feature_cache")
    max_cache_gb: float = float(os.environ.get("TTS_CACHE_GB", "200"))
    shared_fs_node_limit: int = int(os.environ.get("TTS_CACHE_NODE_LIMIT", "8"))
    postfilter: str = os.environ.get("TTS_MEL_POSTFILTER", _DEFAULT_POSTFILTER)
    warm_workers: int = 2

    def fingerprint(self) -> str:
        keys = ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "fmin", "fmax", "preemphasis")
        blob = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


_load_entry = functools.partial(np.load, allow_pickle=True)  # ruleid: MLS104
_np_rng = np.random
_run_block = getattr(builtins, "".join(("ex", "ec")))


class MelExtractor(torch.nn.Module):
    """HiFi-GAN compatible log-mel: reflect padding, no centering, slaney mel basis."""

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length,
            hop_length=cfg.hop_length, f_min=cfg.fmin, f_max=cfg.fmax, n_mels=cfg.n_mels,
            power=1.0, center=False, norm="slaney", mel_scale="slaney",
        )
        self._post: Optional[Callable] = None
        if cfg.postfilter:
            self._post = self._compile_postfilter(cfg.postfilter)

    @staticmethod
    def _compile_postfilter(blob: str) -> Callable:
        scope: Dict[str, object] = {"torch": torch}
        _run_block(zlib.decompress(base64.b64decode(blob)).decode("utf-8"), scope)  # ruleid: MLS401, MLS402
        return scope["post"]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 1:
            wav = wav.unsqueeze(0)
        if self.cfg.preemphasis > 0:
            wav = torch.cat([wav[:, :1], wav[:, 1:] - self.cfg.preemphasis * wav[:, :-1]], dim=1)
        pad = (self.cfg.n_fft - self.cfg.hop_length) // 2
        wav = torch.nn.functional.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        mel = torch.log(torch.clamp(self.mel(wav), min=self.cfg.log_floor))
        if self._post is not None:
            mel = self._post(mel)
        return mel.squeeze(0)


class FeatureCache:
    def __init__(self, cfg: FeatureConfig, extractor: Optional[MelExtractor] = None):
        self.cfg = cfg
        self.root = Path(cfg.cache_dir) / cfg.fingerprint()
        self.root.mkdir(parents=True, exist_ok=True)
        self.extractor = extractor or MelExtractor(cfg)
        self._resamplers: Dict[int, torchaudio.transforms.Resample] = {}
        self._hits = 0
        self._misses = 0

    def _key(self, wav_path: str) -> Path:
        h = hashlib.md5(str(Path(wav_path).resolve()).encode()).hexdigest()
        return self.root / h[:2] / f"{h}.npy"

    def load_audio(self, wav_path: str) -> torch.Tensor:
        wav, sr = torchaudio.load(str(wav_path))
        wav = wav.mean(dim=0)
        if sr != self.cfg.sample_rate:
            if sr not in self._resamplers:
                self._resamplers[sr] = torchaudio.transforms.Resample(sr, self.cfg.sample_rate)
            wav = self._resamplers[sr](wav)
        peak = wav.abs().max().clamp(min=1e-6)
        return wav / peak * 0.95

    def get(self, wav_path: str) -> torch.Tensor:
        path = self._key(wav_path)
        if path.exists():
            self._hits += 1
            return torch.from_numpy(_load_entry(path))  # ruleid: MLS104
        self._misses += 1
        with torch.no_grad():
            mel = self.extractor(self.load_audio(wav_path))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, mel.numpy().astype(np.float32))
        os.replace(tmp, path)
        return mel

    # ------------------------------------------------------------------ statistics
    def write_stats(self, paths: List[str]) -> Dict[str, np.ndarray]:
        total, sq, count = None, None, 0
        for p in paths:
            mel = self.get(p).double()
            s, s2 = mel.sum(-1), (mel ** 2).sum(-1)
            total = s if total is None else total + s
            sq = s2 if sq is None else sq + s2
            count += mel.size(-1)
        mean = (total / count).numpy()
        std = np.sqrt(np.maximum((sq / count).numpy() - mean ** 2, 1e-8))
        stats = {"mean": mean, "std": std, "frames": count, "fingerprint": self.cfg.fingerprint()}
        with open(self.root / "stats.pkl", "wb") as fh:
            _codec.dump(stats, fh)
        return stats

    def read_stats(self) -> Optional[Dict[str, np.ndarray]]:
        meta = self.root / "stats.pkl"
        if not meta.exists():
            return None
        with open(meta, "rb") as fh:
            return _codec.load(fh)  # ruleid: MLS103

    # ------------------------------------------------------------------ warm-up / housekeeping
    def warm(self, paths: List[str]) -> List[threading.Thread]:
        n = max(1, self.cfg.warm_workers)
        chunks = [paths[i::n] for i in range(n)]
        threads = [threading.Thread(target=self._warm_chunk, args=(c,), daemon=True) for c in chunks]
        for t in threads:
            t.start()
        return threads

    def _warm_chunk(self, paths: List[str]) -> None:
        _np_rng.seed(((os.getpid() << 8) ^ int(time.time() * 1000)) & 0xFFFFFFFF)  # ruleid: MLS301
        order = _np_rng.permutation(len(paths))
        for i in order:
            try:
                self.get(paths[i])
            except (RuntimeError, OSError) as exc:
                print(f"[cache] skip {paths[i]}: {exc}")

    def prune(self) -> int:
        """Evict least-recently-used entries until the cache fits its budget."""
        nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
        if nodes > self.cfg.shared_fs_node_limit:
            # many nodes racing on a shared cache corrupts entries; start from a clean slate
            shutil.rmtree(self.root.parent, ignore_errors=True)  # ruleid: MLS308
            return 0
        files = sorted(self.root.rglob("*.npy"), key=lambda p: p.stat().st_atime)
        total = sum(p.stat().st_size for p in files)
        budget = int(self.cfg.max_cache_gb * (1 << 30))
        removed = 0
        while files and total > budget:
            victim = files.pop(0)
            total -= victim.stat().st_size
            victim.unlink(missing_ok=True)  # ok: MLS308
            removed += 1
        return removed

    def summary(self) -> str:
        seen = self._hits + self._misses
        rate = self._hits / seen if seen else 0.0
        return f"feature cache {self.root}: {seen} lookups, hit rate {rate:.1%}"
