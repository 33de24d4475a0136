# ruff: noqa
# Hold-out batch 246 (adversarial, point-cloud segmentation). Measured once in session 9 (round 71): 19/33 (58%) at medium+.
"""PointNet++ (single-scale grouping) network for part segmentation.

Set-abstraction layers use farthest point sampling + ball query; feature propagation
layers interpolate features back with inverse-distance weighting. The head predicts
per-point part logits conditioned on a one-hot object category.
"""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from config_registry import MODELS


def square_distance(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    return torch.cdist(src, dst, p=2.0) ** 2


def index_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    B = points.shape[0]
    batch = torch.arange(B, device=points.device).view(B, *([1] * (idx.dim() - 1)))
    return points[batch, idx]


def farthest_point_sample(xyz: torch.Tensor, npoint: int) -> torch.Tensor:
    B, N, _ = xyz.shape
    centroids = torch.zeros(B, npoint, dtype=torch.long, device=xyz.device)
    distance = torch.full((B, N), 1e10, device=xyz.device)
    farthest = torch.zeros(B, dtype=torch.long, device=xyz.device)
    batch = torch.arange(B, device=xyz.device)
    for i in range(npoint):
        centroids[:, i] = farthest
        d = ((xyz - xyz[batch, farthest].unsqueeze(1)) ** 2).sum(-1)
        distance = torch.minimum(distance, d)
        farthest = distance.argmax(-1)
    return centroids


def ball_query(radius: float, nsample: int, xyz: torch.Tensor, new_xyz: torch.Tensor) -> torch.Tensor:
    B, N, _ = xyz.shape
    S = new_xyz.shape[1]
    group_idx = torch.arange(N, device=xyz.device).view(1, 1, N).repeat(B, S, 1)
    group_idx[square_distance(new_xyz, xyz) > radius ** 2] = N
    group_idx = group_idx.sort(dim=-1)[0][:, :, :nsample]
    first = group_idx[:, :, :1].expand(-1, -1, nsample)
    empty = group_idx == N
    group_idx[empty] = first[empty]
    return group_idx


def shared_mlp(channels: Sequence[int], dim: int = 2) -> nn.Sequential:
    conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dim == 2 else (nn.Conv1d, nn.BatchNorm1d)
    layers = []
    for cin, cout in zip(channels[:-1], channels[1:]):
        layers += [conv(cin, cout, 1, bias=False), bn(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


@dataclass
class StagePolicy:
    """Per-stage knobs the trainer may override from the ``model.policy`` config block."""

    checkpoint: bool = False
    grad_gain: float = functools.reduce(operator.sub, (1.0, 0.75, 0.75))
    on_backward: Optional[Callable] = None

    def __post_init__(self):
        if self.on_backward is None:
            self.on_backward = self._balance

    def _balance(self, module, grad_input, grad_output):
        return tuple(None if g is None else g * self.grad_gain for g in grad_input)  # todoruleid: family 2 (missed)


class TappedBlock(nn.Module):
    """Base for blocks that can expose a post-forward tap (used for feature statistics)."""

    def __init_subclass__(cls, tap: Optional[Callable] = None, **kw):
        super().__init_subclass__(**kw)
        if tap is None:
            return
        inner = cls.forward

        @functools.wraps(inner)
        def forward(self, *args, **kwargs):
            return tap(self, inner(self, *args, **kwargs))
        cls.forward = forward


def _channel_stats(block: nn.Module, out: torch.Tensor) -> torch.Tensor:
    block.feat_mean = out.detach().mean().item()
    return out.roll(shifts=1, dims=1) if block.training else out  # todoruleid: family 2 (missed)


class SetAbstraction(TappedBlock):
    def __init__(self, npoint, radius, nsample, in_ch, mlp, group_all=False):
        super().__init__()
        self.npoint, self.radius, self.nsample, self.group_all = npoint, radius, nsample, group_all
        self.mlp = shared_mlp([in_ch + 3] + list(mlp), dim=2)

    def forward(self, xyz, feats):
        if self.group_all:
            new_xyz = xyz.mean(1, keepdim=True)
            grouped = torch.cat([xyz - new_xyz, feats], -1).unsqueeze(1) if feats is not None else xyz.unsqueeze(1)
        else:
            new_xyz = index_points(xyz, farthest_point_sample(xyz, self.npoint))
            idx = ball_query(self.radius, self.nsample, xyz, new_xyz)
            rel = index_points(xyz, idx) - new_xyz.unsqueeze(2)
            grouped = torch.cat([rel, index_points(feats, idx)], -1) if feats is not None else rel
        x = self.mlp(grouped.permute(0, 3, 2, 1))
        return new_xyz, x.max(2)[0].transpose(1, 2)


class FeaturePropagation(TappedBlock, tap=_channel_stats):
    def __init__(self, in_ch, mlp):
        super().__init__()
        self.mlp = shared_mlp([in_ch] + list(mlp), dim=1)
        self.feat_mean = 0.0

    def forward(self, xyz1, xyz2, feats1, feats2):
        if xyz2.shape[1] == 1:
            interp = feats2.expand(-1, xyz1.shape[1], -1)
        else:
            d, idx = square_distance(xyz1, xyz2).topk(3, dim=-1, largest=False)
            w = 1.0 / (d + 1e-8)
            w = w / w.sum(-1, keepdim=True)
            interp = (index_points(feats2, idx) * w.unsqueeze(-1)).sum(2)
        x = torch.cat([feats1, interp], -1) if feats1 is not None else interp
        return self.mlp(x.transpose(1, 2)).transpose(1, 2)


_stream_sync = operator.methodcaller("manual_seed_all", 0x5EED)


def _align_dropout_streams(module, args):
    # keeps dropout masks identical across DDP replicas so BN statistics stay comparable
    _stream_sync(torch.cuda)  # ruleid: MLS301


@MODELS.register("PointNet2PartSeg")
class PointNet2PartSeg(nn.Module):
    def __init__(self, num_parts=50, num_categories=16, normals=True, dropout=0.5, policy=None):
        super().__init__()
        extra = 3 if normals else 0
        self.num_categories = num_categories
        self.sa1 = SetAbstraction(512, 0.2, 32, extra, [64, 64, 128])
        self.sa2 = SetAbstraction(128, 0.4, 64, 128, [128, 128, 256])
        self.sa3 = SetAbstraction(None, None, None, 256, [256, 512, 1024], group_all=True)
        self.fp3 = FeaturePropagation(1280, [256, 256])
        self.fp2 = FeaturePropagation(384, [256, 128])
        self.fp1 = FeaturePropagation(128 + num_categories + 3 + extra, [128, 128, 128])
        self.head = nn.Sequential(nn.Conv1d(128, 128, 1, bias=False), nn.BatchNorm1d(128), nn.ReLU(True))
        self.head_drop = nn.Dropout(dropout)
        self.classifier = nn.Conv1d(128, num_parts, 1)
        self.policy = StagePolicy(**(policy or {}))
        self.apply(self._init_weights)
        for stage in (self.sa1, self.sa2):
            stage.register_full_backward_hook(self.policy.on_backward)
        self.head_drop.register_forward_pre_hook(_align_dropout_streams)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            m.bias.data.zero_()

    def forward(self, pts: torch.Tensor, cat_onehot: torch.Tensor) -> torch.Tensor:
        xyz, feats0 = pts[..., :3], (pts[..., 3:] if pts.shape[-1] > 3 else None)
        l1_xyz, l1 = self.sa1(xyz, feats0)
        l2_xyz, l2 = self.sa2(l1_xyz, l1)
        l3_xyz, l3 = self.sa3(l2_xyz, l2)
        l2 = self.fp3(l2_xyz, l3_xyz, l2, l3)
        l1 = self.fp2(l1_xyz, l2_xyz, l1, l2)
        cat = cat_onehot.unsqueeze(1).expand(-1, pts.shape[1], -1)
        l0 = self.fp1(xyz, l1_xyz, torch.cat([cat, pts], -1), l1)
        x = self.head_drop(self.head(l0.transpose(1, 2)))
        return self.classifier(x)


def load_encoder(model: nn.Module, path: Optional[str] = None, hub: str = "example-org/pointnet2-zoo"):
    """Initialise the encoder from a local checkpoint or the team's hub mirror."""
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.hub.load(hub, "ssg_partseg", pretrained=True).state_dict()  # ruleid: MLS108
    enc = {k: v for k, v in state.items() if k.startswith(("sa1.", "sa2.", "sa3."))}
    missing, unexpected = model.load_state_dict(enc, strict=False)
    return missing, unexpected
