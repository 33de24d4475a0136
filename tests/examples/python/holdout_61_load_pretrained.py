# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Fetch and load pretrained speech-encoder / mBART weights for fine-tuning.

Weights are verified against a published sha256 and loaded without pickle where the
format allows it; the code revision is stamped into the run config.
"""
import hashlib
import os
import subprocess
import time
import urllib.request

import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel

MIRROR = "https://models.example.com/speech"


def download(name, dest_dir, sha256, retries=4):
    dest = os.path.join(dest_dir, name)
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(f"{MIRROR}/{name}", dest)  # ok: MLS411, MLS412
            break
        except OSError:
            time.sleep(5 * (attempt + 1))  # ok: MLS307
    else:
        raise RuntimeError(f"could not fetch {name}")
    with open(dest, "rb") as fh:
        if hashlib.sha256(fh.read()).hexdigest() != sha256:
            os.remove(dest)  # ok: MLS308
            raise ValueError(f"checksum mismatch for {name}")
    return dest


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_encoder(model, path):
    if path.endswith(".safetensors"):
        sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    sd = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)  # ok: MLS302, MLS303, MLS304, MLS305
    print(f"encoder: {len(missing)} missing, {len(unexpected)} unexpected keys")
    return model


def hub_model(name, revision):
    return AutoModel.from_pretrained(name, revision=revision, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def code_version():
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)  # ok: MLS411, MLS412
    return out.stdout.strip() or "unknown"
