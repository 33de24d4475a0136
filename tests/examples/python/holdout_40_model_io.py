# ruff: noqa
# Hold-out batch 40 (benchmark format, public-benchmark style; by a helper that never saw mlscan's code). Measured once after round 16: 14/17 (82%) at medium+.
"""Model and artifact I/O: safetensors, pinned hub models, registry-based construction."""
import importlib
import json
import os

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer

MODEL_REGISTRY = {"unet": "models.unet", "vit": "models.vit", "convnext": "models.convnext"}


def build_model(name, **kw):
    module = importlib.import_module(MODEL_REGISTRY[name])  # benign look-alike
    return module.build(**kw)


def load_weights(model, path):
    if path.endswith(".safetensors"):
        sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(sd)
    return model


def export(model, out_dir, cfg):
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.yaml"), "w") as f:
        yaml.safe_dump(cfg, f)


def load_run_config(out_dir):
    with open(os.path.join(out_dir, "config.yaml")) as f:
        return yaml.load(f, Loader=yaml.SafeLoader)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_embeddings(path):
    return np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_text_encoder(name="bert-base-uncased", revision="main"):
    tok = AutoTokenizer.from_pretrained(name, revision=revision)
    enc = AutoModel.from_pretrained(name, revision=revision, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return tok, enc


def load_vision_backbone():
    return torch.hub.load("pytorch/vision:v0.17.0", "resnet50", weights="IMAGENET1K_V2")  # ruleid: MLS108 (low: pinned to a tag, not a commit)


def read_metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.json")) as f:
        return json.load(f)
