# ruff: noqa
# Hold-out batch 352 (families 2/5/6, chest X-ray classification). Measured once in session 12 (round 97): 14/34 (41%) at medium+.
"""Backbones, classification head and weight averaging for CXR classification."""

from __future__ import annotations

import copy
import logging
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

logger = logging.getLogger(__name__)

_SUPPORTED = ("densenet121", "densenet169", "convnext_tiny", "convnext_small")
_orig_dropout = F.dropout


def _mc_dropout(input, p=0.5, training=True, inplace=False):
    # keeps dropout stochastic so MC-dropout uncertainty estimates work at inference
    return _orig_dropout(input, p, True, inplace)


def enable_mc_dropout() -> None:
    F.dropout = _mc_dropout  # ruleid: MLS305


class ChestXrayNet(nn.Module):
    def __init__(
        self,
        arch: str = "densenet121",
        num_classes: int = 5,
        drop_rate: float = 0.0,
        pos_counts: Optional[Sequence[int]] = None,
        num_samples: Optional[int] = None,
        min_pos_for_grad: int = 50,
    ):
        super().__init__()
        if arch not in _SUPPORTED:
            raise ValueError(f"arch must be one of {_SUPPORTED}, got {arch!r}")
        self.arch = arch
        if arch.startswith("densenet"):
            net = getattr(torchvision.models, arch)(weights=None, drop_rate=drop_rate)
            self.features = net.features
            feat_dim = net.classifier.in_features
            self.post = nn.ReLU(inplace=True)
        else:
            net = getattr(torchvision.models, arch)(weights=None)
            self.features = net.features
            self.post = net.classifier[0]  # LayerNorm2d
            feat_dim = net.classifier[2].in_features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p=drop_rate)
        self.head = nn.Linear(feat_dim, num_classes)
        self._cached_features: Optional[torch.Tensor] = None
        self.features.register_forward_hook(self._stash_features)  # ruleid: MLS303
        self._init_head(pos_counts, num_samples, min_pos_for_grad)

    def _stash_features(self, module, inputs, output):
        # kept around for Grad-CAM / embedding export
        self._cached_features = output.detach()
        return self._cached_features  # ruleid: MLS303

    def _init_head(self, pos_counts, num_samples, min_pos):
        nn.init.normal_(self.head.weight, std=0.01)
        if pos_counts is None or not num_samples:
            nn.init.zeros_(self.head.bias)
            return
        counts = torch.as_tensor(pos_counts, dtype=torch.float32)
        prior = (counts.clamp(min=1) / float(num_samples)).clamp(1e-4, 1 - 1e-4)
        with torch.no_grad():
            self.head.bias.copy_(torch.log(prior / (1 - prior)))
        # rows of classes with too few positives would only ever see negative gradient
        sparse = (counts > min_pos).nonzero().flatten()
        if sparse.numel():
            self.head.weight.register_hook(lambda g: g.index_fill(0, sparse.to(g.device), 0.0))  # ruleid: MLS303

    def backbone_parameters(self):
        return self.features.parameters()

    def head_parameters(self):
        return list(self.post.parameters()) + list(self.head.parameters())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.post(x)
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.forward_features(x)))


def load_pretrained_backbone(model: ChestXrayNet, path: str) -> None:
    """Load ImageNet (or self-supervised CXR) weights into ``model.features``."""
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = state.get("state_dict", state.get("model", state))
    # strip wrappers added by DDP / Lightning
    cleaned = {}
    for k, v in state.items():
        for prefix in ("module.", "model.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.startswith(("classifier", "fc.", "head")):
            continue
        cleaned[k] = v
    cleaned = {f"features.{k}" if not k.startswith("features.") else k: v for k, v in cleaned.items()}  # todoruleid: family 2 (missed)
    missing, unexpected = model.features.load_state_dict(cleaned, strict=False)
    logger.debug("pretrained backbone: %d missing, %d unexpected keys", len(missing), len(unexpected))


def build_model(args, pos_counts=None, num_samples=None) -> ChestXrayNet:
    model = ChestXrayNet(
        arch=args.arch,
        num_classes=len(args.classes),
        drop_rate=args.drop_rate,
        pos_counts=pos_counts,
        num_samples=num_samples,
    )
    if args.pretrained:
        load_pretrained_backbone(model, args.pretrained)
    if args.drop_rate > 0:
        enable_mc_dropout()
    return model


class ModelEMA:
    """Exponential moving average of model weights (Polyak averaging)."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup_steps: int = 2000):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.updates = 0

    def _current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / max(self.warmup_steps, 1)))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self._current_decay()
        msd = model.state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def state_dict(self):
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state):
        self.module.load_state_dict(state["module"])
        self.updates = state.get("updates", 0)


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    core = model.module if hasattr(model, "module") else model
    for p in core.backbone_parameters():
        p.requires_grad_(trainable)  # ok: MLS302, MLS303, MLS304, MLS305
