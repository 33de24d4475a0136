# ruff: noqa
# Hold-out batch 407 (16 short files, one domain each). Measured once in session 16 (round 111): 14/17 (82%) at medium+.
"""PatchCore memory bank build/load for MVTec-AD style industrial inspection."""
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.hub import load_state_dict_from_url
from torchvision.models import wide_resnet50_2

log = logging.getLogger("patchcore")

WRN50_URL = "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth"


def build_backbone(device):
    net = wide_resnet50_2()
    state = load_state_dict_from_url(WRN50_URL, progress=False, check_hash=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    net.load_state_dict(state)
    return net.to(device).eval()


@torch.no_grad()
def extract_patches(backbone, images):
    x = backbone.conv1(images)
    x = backbone.maxpool(backbone.relu(backbone.bn1(x)))
    f2 = backbone.layer2(backbone.layer1(x))
    f3 = backbone.layer3(f2)
    f3 = F.interpolate(f3, size=f2.shape[-2:], mode="bilinear", align_corners=False)
    feats = torch.cat([f2, f3], dim=1)
    feats = F.avg_pool2d(feats, 3, stride=1, padding=1)
    return feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])


def load_memory_bank(category, bank_dir, remote_root=None):
    """Load a coreset-subsampled bank; banks may be shared between inspection lines."""
    path = os.path.join(bank_dir, f"{category}_bank.npz")
    if not os.path.exists(path) and remote_root:
        torch.hub.download_url_to_file(f"{remote_root}/{category}_bank.npz", path, progress=False)
    blob = np.load(path, allow_pickle=True)  # ruleid: MLS104
    bank = torch.from_numpy(blob["features"]).float()
    meta = blob["meta"].item() if "meta" in blob.files else {}
    log.info("memory bank %s: %d x %d (%s)", category, bank.shape[0], bank.shape[1], meta)
    return bank, meta


@torch.no_grad()
def anomaly_map(backbone, images, bank, k=1):
    patches = extract_patches(backbone, images)
    dists = torch.cdist(patches, bank.to(patches.device))
    scores = dists.topk(k, largest=False).values.mean(-1)
    b, _, h, w = images.shape
    side = int(scores.numel() // b) ** 0.5
    amap = scores.view(b, 1, int(side), int(side))
    amap = F.interpolate(amap, size=(h, w), mode="bilinear", align_corners=False)
    return amap, amap.flatten(1).amax(1)
