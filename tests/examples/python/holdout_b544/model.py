# ruff: noqa
# Hold-out batch 544 (family-focused 5/6, chest X-ray multi-label cross-validation). Measured once in session 24 (round 145): 10/30 (33%) at medium+.
"""DenseNet backbones with a multi-label head, plus post-hoc temperature scaling."""
from __future__ import annotations

import logging
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

logger = logging.getLogger(__name__)

_BACKBONES = {
    "densenet121": torchvision.models.densenet121,
    "densenet169": torchvision.models.densenet169,
    "densenet201": torchvision.models.densenet201,
}


class CheXNet(nn.Module):
    """DenseNet feature extractor -> global average pool -> dropout -> linear (one logit per finding)."""

    def __init__(
        self,
        num_labels: int,
        arch: str = "densenet121",
        pretrained: bool = True,
        drop_rate: float = 0.0,
        head_dropout: float = 0.2,
        memory_efficient: bool = False,
    ):
        super().__init__()
        if arch not in _BACKBONES:
            raise ValueError(f"unknown arch {arch!r}; choose from {sorted(_BACKBONES)}")
        net = _BACKBONES[arch](
            weights="DEFAULT" if pretrained else None,
            drop_rate=drop_rate,
            memory_efficient=memory_efficient,
        )
        self.features = net.features
        self.num_features = net.classifier.in_features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(head_dropout)
        self.classifier = nn.Linear(self.num_features, num_labels)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def init_bias_from_prior(self, prevalence: torch.Tensor) -> None:
        """Start the head at the training prevalence so early BCE is not dominated by the bias."""
        p = prevalence.float().clamp(1e-4, 1 - 1e-4)
        with torch.no_grad():
            self.classifier.bias.copy_(torch.log(p / (1 - p)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        f = F.relu(self.features(x), inplace=True)
        return self.pool(f).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.forward_features(x)))


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float, weight_decay: float) -> List[Dict]:
    """Lower LR on the pretrained backbone; no weight decay on norms and biases."""
    groups = {
        ("backbone", True): [], ("backbone", False): [],
        ("head", True): [], ("head", False): [],
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "head" if "classifier" in name else "backbone"
        decay = p.ndim > 1
        groups[(part, decay)].append(p)
    out = []
    for (part, decay), params in groups.items():
        if not params:
            continue
        out.append(
            {
                "params": params,
                "lr": lr * (backbone_lr_mult if part == "backbone" else 1.0),
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{part}{'' if decay else '_no_decay'}",
            }
        )
    return out


class TemperatureScaler(nn.Module):
    """Guo et al. (2017) temperature scaling; optionally one temperature per label."""

    def __init__(self, num_labels: int, per_label: bool = False):
        super().__init__()
        self.log_t = nn.Parameter(torch.zeros(num_labels if per_label else 1))

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_t.detach().exp()

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.log_t.exp()


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, per_label: bool = False,
                    max_iter: int = 100) -> TemperatureScaler:
    logits = logits.detach().float().cpu()
    targets = targets.detach().float().cpu()
    scaler = TemperatureScaler(logits.shape[1], per_label=per_label)
    opt = torch.optim.LBFGS(scaler.parameters(), lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(scaler(logits), targets)
        loss.backward()
        return loss

    before = F.binary_cross_entropy_with_logits(logits, targets).item()
    opt.step(closure)
    with torch.no_grad():
        after = F.binary_cross_entropy_with_logits(scaler(logits), targets).item()
    logger.info("temperature scaling: T=%s  NLL %.4f -> %.4f",
                [round(t, 3) for t in scaler.temperature.tolist()], before, after)
    return scaler
