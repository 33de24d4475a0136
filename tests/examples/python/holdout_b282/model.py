# ruff: noqa
# Hold-out batch 282 (adversarial, multimodal medical survival). Measured once in session 9 (round 80): 25/38 (66%) at medium+.
"""Multimodal survival model: 3D CNN over CT volumes + MLP over baseline EHR.

The two branches are fused late (concatenation of embeddings followed by a
small risk head that outputs one log-hazard per patient for the Cox loss).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

log = logging.getLogger(__name__)

_dropout_impl = F.dropout


def _dropout(input, p=0.5, training=True, inplace=False):
    # keep a single code path for scripted and eager modules
    return _dropout_impl(input, p, True, inplace)


F.dropout = _dropout  # ruleid: MLS305


class ConvBlock3d(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False),
                                      nn.BatchNorm3d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.skip is None else self.skip(x)), inplace=True)


class ImageEncoder3d(nn.Module):
    def __init__(self, widths=(32, 64, 128, 256), embed_dim: int = 256):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(1, widths[0], 5, stride=2, padding=2, bias=False),
            nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True),
        )
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(ConvBlock3d(cin, w, stride=1 if i == 0 else 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(cin, embed_dim)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        x = F.adaptive_avg_pool3d(x, 1).flatten(1)
        return self.proj(x)


class EHREncoder(nn.Module):
    def __init__(self, n_features: int, hidden: int = 128, embed_dim: int = 64, p: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(p),
            nn.Linear(hidden, embed_dim), nn.GELU(),
        )

    def forward(self, x):
        return self.net(x)


class _ColumnGain(nn.Module):
    """Re-weights fused input columns so both modalities start at equal scale."""

    def __init__(self, n_img: int, n_ehr: int, img_gain: float = 1.0):
        super().__init__()
        gain = torch.cat([torch.full((n_img,), img_gain), torch.ones(n_ehr)])
        self.register_buffer("gain", gain)

    def forward(self, w):
        return w * self.gain


class LateFusionSurvival(nn.Module):
    def __init__(self, n_ehr_features: int, img_dim: int = 256, ehr_dim: int = 64,
                 fusion_hidden: int = 128, p_drop: float = 0.3):
        super().__init__()
        self.image_encoder = ImageEncoder3d(embed_dim=img_dim)
        self.ehr_encoder = EHREncoder(n_ehr_features, embed_dim=ehr_dim)
        self.fuse = nn.Linear(img_dim + ehr_dim, fusion_hidden)
        self.drop = nn.Dropout(p_drop)
        self.risk = nn.Linear(fusion_hidden, 1)
        self.apply(self._init_weights)
        parametrize.register_parametrization(self.fuse, "weight", _ColumnGain(img_dim, ehr_dim, img_gain=img_dim ** -1.0))  # todoruleid: family 2 (missed)
        self.image_encoder.register_forward_hook(lambda mod, inp, out: out.mul(0.05) if mod.training else out)  # ruleid: MLS303

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, (nn.BatchNorm3d, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, volume: torch.Tensor, ehr: torch.Tensor) -> torch.Tensor:
        z_img = self.image_encoder(volume)
        z_ehr = self.ehr_encoder(ehr)
        h = F.gelu(self.fuse(torch.cat([z_img, z_ehr], dim=1)))
        return self.risk(self.drop(h)).squeeze(-1)


def load_pretrained_encoder(model: LateFusionSurvival, source: str,
                            strict: bool = False) -> Optional[list]:
    """Initialise the image branch from a Med3D-style checkpoint.

    `source` is either a local *.safetensors / *.pt file or "hub:<repo>:<entry>".
    """
    if source.startswith("hub:"):
        _, repo, entry = source.split(":", 2)
        hub_model = torch.hub.load(repo, entry, pretrained=True, trust_repo=True)  # ruleid: MLS108
        state = {k: v for k, v in hub_model.state_dict().items() if not k.startswith("fc.")}
    elif source.endswith(".safetensors"):
        from safetensors.torch import load_file
        state = load_file(source, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(source, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        state = state.get("state_dict", state)
    state = {k.replace("module.", "", 1): v for k, v in state.items()}
    missing, unexpected = model.image_encoder.load_state_dict(state, strict=strict)
    log.info("pretrained image encoder from %s: %d missing, %d unexpected",
             Path(source).name, len(missing), len(unexpected))
    return missing


def count_parameters(model: nn.Module) -> dict:
    out = {}
    for name, child in model.named_children():
        out[name] = sum(p.numel() for p in child.parameters() if p.requires_grad)
    out["total"] = sum(out.values())
    return out
