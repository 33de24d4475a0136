# ruff: noqa
# Hold-out batch 74 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/18 (67%) at medium+.
"""Load pretrained backbones and cached features for the zero-shot audio/text evaluation suite."""
import ast
import hashlib
import json
import time

import numpy as np
import requests
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

CLAP_REPO, CLAP_REV = "laion/clap-htsat-unfused", "8fa0f1c6d0433df6e97c127f64b2a1d6c0dcb8a5"


def read_config(path):
    with open(path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    # CLI overrides arrive as strings like "[0.1, 0.2]"; parse literals only
    for k, v in cfg.get("overrides", {}).items():
        cfg[k] = ast.literal_eval(v) if isinstance(v, str) else v  # benign look-alike
    return cfg


def download(url, dest, sha256, retries=5):
    for attempt in range(retries):
        try:
            r = requests.get(url, timeout=30)  # ok: MLS411, MLS412
            r.raise_for_status()
            if hashlib.sha256(r.content).hexdigest() != sha256:
                raise ValueError(f"checksum mismatch for {url}")
            with open(dest, "wb") as fh:
                fh.write(r.content)
            return dest
        except (requests.RequestException, ValueError):
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def load_backbone(device="cuda"):
    model = AutoModel.from_pretrained(CLAP_REPO, revision=CLAP_REV, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    processor = AutoProcessor.from_pretrained(CLAP_REPO, revision=CLAP_REV)
    return model.to(device).eval(), processor


def load_probe(path):
    if path.endswith(".safetensors"):
        return load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_cached_features(prefix):
    feats = np.load(f"{prefix}.npy", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    with open(f"{prefix}.labels.json") as fh:
        labels = json.load(fh)
    return feats, labels


def load_vision_baseline():
    return torch.hub.load("pytorch/vision:v0.16.0", "resnet50", weights="IMAGENET1K_V2")  # ruleid: MLS108 (low: a release tag, not a commit)
