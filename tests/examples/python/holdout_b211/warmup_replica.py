# ruff: noqa
# Hold-out batch 211 (16 short benchmark-format files). Measured once in session 7 (round 62): 14/18 (78%) at medium+.
"""Replica warmup for the music-generation inference server.

Fetches the published safetensors weights (with retries), records the build
revision, and runs a few short generations so CUDA graphs and caches are hot.
"""
import logging
import os
import signal
import subprocess
import time
import urllib.request

import torch
from safetensors.torch import load_file

from music_transformer_lit import MusicLM

WEIGHTS_URL = "https://models.example.com/music/musiclm-small/model.safetensors"
log = logging.getLogger("warmup")
_stop = {"flag": False}


def _on_sigterm(signum, frame):
    _stop["flag"] = True  # ok: MLS307


def download(url, dst, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)  # ok: MLS411, MLS412
            return dst
        except OSError as exc:
            log.warning("download failed (%s), retry %d", exc, attempt + 1)
            time.sleep(5 * (attempt + 1))  # ok: MLS307
    raise RuntimeError("weights unavailable")


def build_revision():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("BUILD_SHA", "unknown")


def main(cache="/srv/cache/model.safetensors", n_warm=3):
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    torch.manual_seed(1234)  # ok: MLS301
    if not os.path.exists(cache):
        download(WEIGHTS_URL, cache)
    model = MusicLM()
    model.load_state_dict(load_file(cache))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = model.cuda().eval()
    if os.environ.get("RANK", "0") == "0":
        log.info("warming replica rev=%s", build_revision())  # ok: MLS308
    with torch.inference_mode():
        for i in range(n_warm):
            if _stop["flag"]:
                break
            seq = torch.randint(0, 512, (1, 32), device="cuda")
            for _ in range(64):
                nxt = model(seq)[:, -1].softmax(-1).multinomial(1)
                seq = torch.cat([seq, nxt], 1)
    torch.cuda.synchronize()
    log.info("warmup done")


if __name__ == "__main__":
    main()
