# ruff: noqa
# Hold-out batch 95 (adversarial idioms). Measured once in session 4 (round 33): 9/19 (47%) at medium+.
"""Model registry and weight loading for the evaluation harness."""
import importlib
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

REGISTRY_PKG = "harness.models"
HF_PINS = {"bert-base-uncased": "86b5e0934494bd15c9632b12f734a8a67f723594"}


def read_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def read_legacy_config(path):
    with open(path) as f:
        return yaml.load(f, Loader=yaml.SafeLoader)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def build(cfg):
    module = importlib.import_module(f"{REGISTRY_PKG}.{cfg['arch']}")  # benign look-alike
    return getattr(module, "build_model")(**cfg.get("kwargs", {}))


def load_weights(model, path, strict=True):
    path = Path(path)
    if path.suffix == ".safetensors":
        sd = load_file(str(path), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    sd = sd.get("model", sd)
    return model.load_state_dict({k.removeprefix("module."): v for k, v in sd.items()}, strict=strict)


def load_hf(name):
    rev = HF_PINS.get(name, "main")
    tok = AutoTokenizer.from_pretrained(name, revision=rev)
    model = AutoModel.from_pretrained(name, revision=rev, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return tok, model


def load_torchvision_baseline():
    return torch.hub.load("pytorch/vision:v0.16.0", "resnet50", weights="IMAGENET1K_V2")  # ruleid: MLS108 (low: a tag is not a commit)


def load_embeddings(path):
    arr = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.from_numpy(arr).float()


def load_model(cfg_path):
    cfg = read_config(cfg_path)
    model = build(cfg)
    if cfg.get("weights"):
        load_weights(model, cfg["weights"], strict=cfg.get("strict", True))
    return model.eval()
