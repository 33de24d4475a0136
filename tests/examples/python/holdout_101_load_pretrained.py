# ruff: noqa
# Hold-out batch 101 (textbook forms in small research repos). Measured once in session 4 (round 35): 14/16 (88%) at medium+.
"""Utilities to load configs and pretrained backbones for the fine-tuning scripts."""
import os
import time
import urllib.request

import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def fetch(url, dst, retries=4):
    for i in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)
            return dst
        except OSError:
            time.sleep(5 * (i + 1))  # ok: MLS307
    raise RuntimeError(f"failed to download {url}")


def load_backbone(cfg):
    name = cfg["backbone"]
    if name.startswith("hf:"):
        hf_id = name[3:]
        config = AutoConfig.from_pretrained(hf_id, revision=cfg.get("revision", "main"))
        return AutoModel.from_pretrained(hf_id, config=config, revision=cfg.get("revision", "main"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if name.startswith("hub:"):
        return torch.hub.load("pytorch/vision:v0.16.0", name[4:], weights="DEFAULT")  # ruleid: MLS108 (low: a tag is not a commit)
    raise ValueError(f"unknown backbone spec {name}")


def load_weights(model, path):
    if path.startswith("http"):
        path = fetch(path, os.path.join("/tmp", os.path.basename(path)))
    if path.endswith(".safetensors"):
        sd = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    model.load_state_dict(sd, strict=False)
    return model
