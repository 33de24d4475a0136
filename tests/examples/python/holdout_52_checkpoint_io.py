# ruff: noqa
# Hold-out batch 52 (benchmark format, independent grader's set; by a helper that never saw mlscan's code). Measured once after round 22: 13/17 (76%) at medium+.
"""Checkpoint, config and artifact I/O with preemption handling."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import requests
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import AutoModel


def load_cfg(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_ckpt(path, model, optimizer=None):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt.get("step", 0)


def load_backbone(name, revision):
    return AutoModel.from_pretrained(name, revision=revision, use_safetensors=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_export(path):
    return load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_embeddings(path):
    return np.load(path, mmap_mode="r")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def fetch(url, dest, tries=5):
    for i in range(tries):
        try:
            r = requests.get(url, timeout=30)
            r.raise_for_status()
            with open(dest, "wb") as fh:
                fh.write(r.content)
            return dest
        except requests.RequestException:
            time.sleep(min(60, 2 ** i))  # ok: MLS307
    raise RuntimeError(url)


def install_preemption_handler(get_state, out_dir):
    def _handler(signum, frame):
        save_file(get_state(), os.path.join(out_dir, "preempt.safetensors"))
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


def code_version():
    return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
