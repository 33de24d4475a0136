# ruff: noqa
# Hold-out batch 88 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 15/17 (88%) at medium+.
"""Loading pretrained backbones / cached features for the linear-probe experiments."""
import json
import os

import numpy as np
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

# revision kept explicit so the thesis probes can be pinned to a commit before submission
BACKBONES = {
    "dinov2-s": ("facebook/dinov2-small", "main"),
    "clip-b16": ("openai/clip-vit-base-patch16", "main"),
}


def load_cfg(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_backbone(key, cache_dir=None):
    repo, rev = BACKBONES[key]
    config = AutoConfig.from_pretrained(repo, revision=rev, cache_dir=cache_dir)
    model = AutoModel.from_pretrained(repo, config=config, revision=rev, cache_dir=cache_dir,
                                      trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model.eval()


def load_probe_head(path, head):
    if path.endswith(".safetensors"):
        head.load_state_dict(load_file(path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return head


def load_features(feat_dir, split):
    arr = np.load(os.path.join(feat_dir, f"{split}_x.npy"), allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    labels = np.load(os.path.join(feat_dir, f"{split}_y.npy"), allow_pickle=False)
    with open(os.path.join(feat_dir, "meta.json")) as f:
        meta = json.load(f)
    assert arr.shape[1] == meta["dim"], (arr.shape, meta)
    return torch.from_numpy(arr).float(), torch.from_numpy(labels).long(), meta
