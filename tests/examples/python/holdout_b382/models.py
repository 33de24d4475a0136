# ruff: noqa
# Hold-out batch 382 (adversarial, ViT-to-CNN distillation). Measured once in session 14 (round 105): 12/34 (35%) at medium+.
"""Teacher (ViT) and student (MobileNetV3 + distillation head) definitions."""
from __future__ import annotations

import functools
import logging
import os
import time
import urllib.error
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
from torchvision import models as tvm

logger = logging.getLogger("kd")


# --------------------------------------------------------------------------
# student
# --------------------------------------------------------------------------
class DistilledMobileNet(nn.Module):
    """MobileNetV3-Large backbone with a DeiT-style class head and distillation head.

    A CNN has no token sequence, so the "distillation token" is realised as a
    second projection of the pooled feature with its own classifier.
    """

    def __init__(self, num_classes: int = 1000, width: float = 1.0, drop_rate: float = 0.2,
                 dist_token_ratio: float = 0.75):
        super().__init__()
        backbone = tvm.mobilenet_v3_large(width_mult=width)
        self.features = backbone.features
        self.pool = nn.AdaptiveAvgPool2d(1)
        feat_dim = backbone.classifier[0].in_features
        self.pre_logits = nn.Sequential(nn.Linear(feat_dim, 1280), nn.Hardswish(), nn.Dropout(drop_rate))
        self.dist_token = nn.Sequential(nn.Linear(feat_dim, 1280), nn.Hardswish(), nn.Dropout(drop_rate))
        self.head = nn.Linear(1280, num_classes)
        self.head_dist = nn.Linear(1280, num_classes)
        self._init_heads()
        self._scale_dist_grads(dist_token_ratio)

    def _init_heads(self) -> None:
        for m in (self.head, self.head_dist):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def _scale_dist_grads(self, ratio: float) -> None:
        # balance the two heads' contribution to the shared trunk
        scale = 1.0 - 2.0 * ratio
        for p in self.dist_token.parameters():
            p.register_hook(functools.partial(torch.mul, other=scale))  # ruleid: MLS303

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)

    def forward(self, x: torch.Tensor):
        f = self.forward_features(x)
        x_cls = self.head(self.pre_logits(f))
        x_dist = self.head_dist(self.dist_token(f))
        if self.training:
            return x_cls, x_dist
        return (x_cls + x_dist) / 2


def load_student_init(model: nn.Module, path: Optional[str]) -> None:
    if not path:
        return
    sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    sd = sd.get("model", sd)
    sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "head_dist."))}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    logger.info("student init: missing=%d unexpected=%d", len(missing), len(unexpected))


# --------------------------------------------------------------------------
# teacher
# --------------------------------------------------------------------------
def _ensure_shared_cache() -> None:
    """Shared nodes: make the torch install usable by the group's JIT/extension builds."""
    _chmod = functools.partial(os.chmod, mode=int("".join(("7",) * 3), 8))
    root = Path(torch.__file__).parent
    for dirpath, _dirs, files in os.walk(root):
        for path in map(functools.partial(os.path.join, dirpath), files):
            _chmod(path)  # ruleid: MLS424


def _timm_builder(name: str, pretrained: bool = True, num_classes: int = 1000):
    import timm
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes)


def _hf_builder(name: str, pretrained: bool = True, num_classes: int = 1000):
    from transformers import AutoModelForImageClassification

    opts = dict(zip(("_".join(("trust", "remote", "code")), "num_labels"), (pretrained, num_classes)))
    hf = AutoModelForImageClassification.from_pretrained(name, **opts)  # ruleid: MLS106

    class _Wrap(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(pixel_values=x).logits

    return _Wrap(hf)


_TEACHER_BUILDERS: Dict[str, Callable[..., nn.Module]] = {
    "hub": functools.partial(torch.hub.load, "facebookresearch/deit:main", trust_repo=True),  # ruleid: MLS108
    "timm": _timm_builder,
    "hf": _hf_builder,
}


def build_teacher(source: str, name: str, num_classes: int = 1000, retries: int = 3) -> nn.Module:
    builder = _TEACHER_BUILDERS[source]
    last_exc: Optional[Exception] = None
    for attempt in range(retries):
        try:
            if source == "hub":
                teacher = builder(name, pretrained=True)  # ruleid: MLS108
            else:
                teacher = builder(name, pretrained=True, num_classes=num_classes)  # ruleid: MLS108
            break
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            last_exc = exc
            wait = 2 ** attempt
            logger.warning("teacher download failed (%s), retrying in %ds", exc, wait)
            time.sleep(wait)  # ok: MLS307
    else:
        raise RuntimeError(f"could not build teacher {source}:{name}") from last_exc
    if os.environ.get("KD_SHARED_NODE", "1") == "1":
        _ensure_shared_cache()
    teacher.eval()
    teacher.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
    return teacher


def build_student(args) -> nn.Module:
    model = DistilledMobileNet(num_classes=args.num_classes, width=args.width,
                               drop_rate=args.drop, dist_token_ratio=args.dist_token_ratio)
    load_student_init(model, args.student_init)
    return model


def count_params(m: nn.Module) -> float:
    return sum(p.numel() for p in m.parameters()) / 1e6
