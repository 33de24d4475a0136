# ruff: noqa
# Hold-out batch 35 (benchmark format, incident write-up style; by a helper that never saw mlscan's code). Measured once after round 14: 19/19 (100%) at medium+.
"""Backbone registry: build a timm/torchvision model and load pretrained weights."""
import os
from typing import Callable, Dict

import timm
import torch
from safetensors.torch import load_file

_LOADERS: Dict[str, Callable[[str], dict]] = {}


def loader(*exts):
    def deco(fn):
        for e in exts:
            _LOADERS[e] = fn
        return fn
    return deco


@loader(".safetensors")
def _load_st(path):
    return load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


@loader(".pth", ".pt")
def _load_pt(path):
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


@loader(".ckpt", ".tar")
def _load_legacy(path):
    # older Lightning/DeepSpeed exports wrap the weights in a dict with extra metadata
    blob = torch.load(path, map_location="cpu", weights_only=False)  # ruleid: MLS101
    return blob.get("state_dict", blob.get("model", blob))


def _strip_prefixes(sd, prefixes=("module.", "model.", "backbone.")):
    out = {}
    for k, v in sd.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def build_backbone(name: str, weights: str = None, num_classes: int = 0):
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if weights:
        ext = os.path.splitext(weights)[1]
        sd = _strip_prefixes(_LOADERS[ext](weights))
        missing, unexpected = model.load_state_dict(sd, strict=False)
        print(f"loaded {weights}: {len(missing)} missing, {len(unexpected)} unexpected keys")
    return model
