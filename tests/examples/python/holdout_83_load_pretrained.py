# ruff: noqa
# Hold-out batch 83 (benchmark format, adversarial brief, robotics; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 11/17 (65%) at medium+.
"""Load pretrained components for fine-tuning a vision-language-action policy.

The language tower comes from a pinned Hugging Face revision, the vision
tower from safetensors, normalisation statistics from .npz files, and the
experiment config from YAML.
"""
import subprocess
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_language_tower(name, revision):
    tok = AutoTokenizer.from_pretrained(name, revision=revision)
    model = AutoModel.from_pretrained(name, revision=revision, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return tok, model


def load_vision_tower(model, path):
    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_file(str(path), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    return model, missing, unexpected


def load_action_stats(path):
    with np.load(path, allow_pickle=False) as z:  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return {k: torch.from_numpy(z[k]).float() for k in ("mean", "std", "min", "max")}


def code_version():
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()  # ok: MLS411, MLS412
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip() != ""
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "nogit"


def build(cfg_path):
    cfg = load_config(cfg_path)
    tok, lang = load_language_tower(cfg["lang"]["name"], cfg["lang"]["revision"])
    vision = torch.hub.load("example-org/visual-encoders:v0.3.1", cfg["vision"]["arch"], pretrained=False, trust_repo=True)  # ruleid: MLS108
    vision, _, _ = load_vision_tower(vision, cfg["vision"]["weights"])
    stats = load_action_stats(cfg["data"]["stats"])
    return {"tokenizer": tok, "lang": lang, "stats": stats, "version": code_version(), "vision": vision}
