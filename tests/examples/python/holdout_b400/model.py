# ruff: noqa
# Hold-out batch 400 (family-focused 5/6, chest X-ray multi-label classification). Measured once in session 16 (round 109): 7/31 (23%) at medium+.
"""Backbone, classification head and loss for multi-label CXR classification."""
from __future__ import annotations

import copy
import logging
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

logger = logging.getLogger(__name__)


class CXRClassifier(nn.Module):
    """DenseNet-121 / ResNet-50 backbone with a dropout + linear multi-label head."""

    def __init__(self, num_classes: int, arch: str = "densenet121", pretrained: bool = True,
                 dropout: float = 0.2):
        super().__init__()
        weights = "DEFAULT" if pretrained else None
        if arch == "densenet121":
            net = torchvision.models.densenet121(weights=weights)
            feat_dim = net.classifier.in_features
            net.classifier = nn.Identity()
        elif arch == "resnet50":
            net = torchvision.models.resnet50(weights=weights)
            feat_dim = net.fc.in_features
            net.fc = nn.Identity()
        else:
            raise ValueError(f"unsupported arch {arch!r}")
        self.backbone = net
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feat_dim, num_classes)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(x)))


def compute_pos_weight(train_targets: np.ndarray, clip: float = 50.0) -> torch.Tensor:
    """pos_weight = #neg / #pos per class, clipped for the rarest findings."""
    pos = train_targets.sum(axis=0)
    neg = train_targets.shape[0] - pos
    w = neg / np.maximum(pos, 1.0)  # ok: MLS309
    return torch.as_tensor(np.clip(w, 1.0, clip), dtype=torch.float32)


class WeightedBCELoss(nn.Module):
    """Weighted BCE with optional label smoothing and online hard-example mining.

    ``ohem_frac`` < 1 keeps only the hardest fraction of (sample, class) terms
    in each batch, which helps the rare classes once the easy negatives are
    learned.
    """

    def __init__(self, pos_weight: Optional[torch.Tensor] = None, smoothing: float = 0.0,
                 ohem_frac: float = 1.0):
        super().__init__()
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else None)
        self.smoothing = smoothing
        self.ohem_frac = ohem_frac

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.smoothing > 0:
            targets = targets * (1.0 - self.smoothing) + 0.5 * self.smoothing  # ok: MLS309
        loss = F.binary_cross_entropy_with_logits(
            logits, targets, pos_weight=self.pos_weight, reduction="none")
        if self.ohem_frac < 1.0 and self.training:
            flat = loss.flatten()
            k = max(1, int(flat.numel() * self.ohem_frac))
            loss = flat.topk(k).values  # ok: MLS309
        return loss.mean()


class ModelEMA:
    """Exponential moving average of model weights, used for evaluation."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        msd = model.state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(self.decay).add_(msd[k].detach(), alpha=1.0 - self.decay)
            else:
                v.copy_(msd[k])

    def state_dict(self):
        return self.module.state_dict()


def build_model(args, num_classes: int) -> nn.Module:
    model = CXRClassifier(num_classes, arch=args.arch, pretrained=not args.no_pretrained,
                          dropout=args.dropout)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("built %s with %.1fM parameters", args.arch, n_params / 1e6)
    return model


def load_checkpoint(model: nn.Module, path: str, map_location="cpu") -> dict:
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    state = ckpt.get("model", ckpt)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        logger.warning("checkpoint %s: missing=%s unexpected=%s", path, missing, unexpected)
    return ckpt
