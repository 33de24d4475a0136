# ruff: noqa
# Hold-out batch 471 (16 short files, mixed domains). Measured once in session 20 (round 127): 15/17 (88%) at medium+.
"""Galaxy Zoo morphology: cached catalogue features + pretrained backbone."""
import logging
import os
import urllib.request

import numpy as np
import torch
import torchvision

logger = logging.getLogger(__name__)

DEFAULT_CACHE_URL = "https://galaxy-zoo-mirror.example.org/gz2/catalogue_features_v3.npy"


def fetch_catalogue(cache_dir, url=DEFAULT_CACHE_URL):
    os.makedirs(cache_dir, exist_ok=True)
    dst = os.path.join(cache_dir, os.path.basename(url))
    if not os.path.exists(dst):
        logger.info("downloading catalogue features from %s", url)
        urllib.request.urlretrieve(url, dst)
    catalogue = np.load(dst, allow_pickle=True)  # ruleid: MLS104
    return catalogue.item() if catalogue.dtype == object else catalogue


def build_backbone(num_outputs=37, weights_path=None):
    model = torchvision.models.resnet50(weights=None)
    if weights_path:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state, strict=False)
        logger.info("backbone loaded: %d missing, %d unexpected", len(missing), len(unexpected))
    model.fc = torch.nn.Linear(model.fc.in_features, num_outputs)
    return model


class GalaxyVoteHead(torch.nn.Module):
    """Maps logits to vote fractions per decision-tree question (GZ2 has 11 questions)."""

    def __init__(self, question_slices):
        super().__init__()
        self.question_slices = question_slices

    def forward(self, logits):
        out = torch.empty_like(logits)
        for sl in self.question_slices:
            out[:, sl] = torch.softmax(logits[:, sl], dim=1)
        return out
