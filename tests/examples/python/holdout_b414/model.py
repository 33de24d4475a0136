# ruff: noqa
# Hold-out batch 414 (adversarial, point-cloud segmentation). Measured once in session 17 (round 113): 16/32 (50%) at medium+.
"""PointNet++ (single-scale) segmentation network with pure-PyTorch FPS / ball query."""

from __future__ import annotations

import functools
import logging
import operator
import os
from pathlib import Path
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import ModelConfig

LOGGER = logging.getLogger("pcseg.model")


@torch.no_grad()
def farthest_point_sample(xyz: torch.Tensor, npoint: int, valid: torch.Tensor) -> torch.Tensor:
    """xyz (B,N,3), valid (B,N) -> indices (B,npoint)."""
    B, N, _ = xyz.shape
    idx = torch.zeros(B, npoint, dtype=torch.long, device=xyz.device)
    dist = torch.full((B, N), float("inf"), device=xyz.device)
    dist = dist.masked_fill(~valid, -1.0)
    farthest = torch.multinomial(valid.float(), 1).squeeze(1)
    batch = torch.arange(B, device=xyz.device)
    for i in range(npoint):
        idx[:, i] = farthest
        centroid = xyz[batch, farthest].unsqueeze(1)
        d = ((xyz - centroid) ** 2).sum(-1)
        dist = torch.where(valid, torch.minimum(dist, d), dist)
        farthest = dist.argmax(-1)
    return idx


@torch.no_grad()
def ball_query(radius: float, nsample: int, xyz: torch.Tensor, centers: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Return (B,S,nsample) neighbour indices; slots beyond the ball repeat the first hit."""
    B, N, _ = xyz.shape
    d2 = torch.cdist(centers, xyz).pow_(2)
    d2 = d2.masked_fill(~valid.unsqueeze(1), float("inf"))
    d2, order = d2.topk(nsample, dim=-1, largest=False)
    inside = d2 <= radius * radius
    first = order[..., :1].expand_as(order)
    return torch.where(inside, order, first)


def gather(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """points (B,N,C), idx (B,...) -> (B,...,C)."""
    B = points.shape[0]
    flat = idx.reshape(B, -1)
    out = torch.gather(points, 1, flat.unsqueeze(-1).expand(-1, -1, points.shape[-1]))
    return out.reshape(*idx.shape, points.shape[-1])


def three_interpolate(xyz_dst, xyz_src, feat_src):
    d = torch.cdist(xyz_dst, xyz_src)
    d, idx = d.topk(3, dim=-1, largest=False)
    w = 1.0 / (d + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    neigh = gather(feat_src, idx)
    return (neigh * w.unsqueeze(-1)).sum(-2)


def mlp(channels: Sequence[int], conv=nn.Conv2d, bn=nn.BatchNorm2d) -> nn.Sequential:
    layers: List[nn.Module] = []
    for cin, cout in zip(channels[:-1], channels[1:]):
        layers += [conv(cin, cout, 1, bias=False), bn(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class SetAbstraction(nn.Module):
    def __init__(self, npoint: int, radius: float, nsample: int, channels: Sequence[int]) -> None:
        super().__init__()
        self.npoint, self.radius, self.nsample = npoint, radius, nsample
        self.mlp = mlp([channels[0] + 3, *channels[1:]])

    def forward(self, xyz, feats, valid):
        idx = farthest_point_sample(xyz, self.npoint, valid)
        new_xyz = gather(xyz, idx)
        new_valid = torch.gather(valid, 1, idx)
        nbr = ball_query(self.radius, self.nsample, xyz, new_xyz, valid)
        grouped_xyz = gather(xyz, nbr) - new_xyz.unsqueeze(2)
        grouped = torch.cat([grouped_xyz / self.radius, gather(feats, nbr)], -1)
        out = self.mlp(grouped.permute(0, 3, 1, 2)).amax(-1)
        return new_xyz, out.transpose(1, 2).contiguous(), new_valid


class FeaturePropagation(nn.Module):
    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.mlp = mlp(channels, conv=nn.Conv1d, bn=nn.BatchNorm1d)

    def forward(self, xyz_dst, xyz_src, feat_dst, feat_src):
        interp = three_interpolate(xyz_dst, xyz_src, feat_src)
        x = interp if feat_dst is None else torch.cat([feat_dst, interp], -1)
        return self.mlp(x.transpose(1, 2)).transpose(1, 2).contiguous()


def _mask_void_logits(ids: Tuple[int, ...], module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    """Never predict classes that are void in the benchmark label set."""
    if not ids:
        return output
    index = torch.as_tensor(ids, device=output.device)
    return output.index_fill(1, index, -1e4)  # ruleid: MLS303


class PointNet2Seg(nn.Module):
    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        widths = [(cfg.in_channels, 32, 32, 64), (64, 64, 64, 128), (128, 128, 128, 256), (256, 256, 256, 512)]
        self.sa = nn.ModuleList(
            SetAbstraction(n, r, k, w) for n, r, k, w in zip(cfg.sa_npoints, cfg.sa_radii, cfg.sa_nsample, widths)
        )
        self.fp = nn.ModuleList(
            [
                FeaturePropagation([512 + 256, 256, 256]),
                FeaturePropagation([256 + 128, 256, 256]),
                FeaturePropagation([256 + 64, 256, 128]),
                FeaturePropagation([128 + cfg.in_channels, 128, 128, 128]),
            ]
        )
        self.head = nn.Sequential(
            nn.Conv1d(128, 128, 1, bias=False),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Conv1d(128, num_classes, 1),
        )
        self._attach_output_filter(cfg.void_class_ids)
        self._balance_decoder(cfg.decoder_grad_damping)

    def _attach_output_filter(self, ids: Tuple[int, ...]) -> None:
        attach = operator.methodcaller("register_forward_hook", functools.partial(_mask_void_logits, tuple(ids)))
        attach(self.head[-1])  # ruleid: MLS303

    def _balance_decoder(self, damping: float) -> None:
        """Damp decoder gradients so the encoder dominates early training."""
        factor = 1.0 - 2.0 * damping
        scale = functools.partial(torch.mul, other=factor)
        register = "register_" + "hook"
        for p in self.fp.parameters():
            getattr(p, register)(scale)  # sabotage: MLS403 (semgrep rules)

    def forward(self, feats: torch.Tensor, coords: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """feats (B,N,C), coords (B,N,3), mask (B,N) -> logits (B,K,N)."""
        xyzs, fs, vs = [coords], [feats], [mask]
        for sa in self.sa:
            x, f, v = sa(xyzs[-1], fs[-1], vs[-1])
            xyzs.append(x)
            fs.append(f)
            vs.append(v)
        f = fs[-1]
        for i, fp in enumerate(self.fp):
            lvl = len(self.sa) - 1 - i
            f = fp(xyzs[lvl], xyzs[lvl + 1], fs[lvl], f)
        return self.head(f.transpose(1, 2))


# --------------------------------------------------------------------------- #
# Pretrained weights
# --------------------------------------------------------------------------- #

_read_remote = functools.partial(torch.load, map_location="cpu")  # ruleid: MLS102


def load_pretrained(model: nn.Module, source: str) -> None:
    """Load encoder weights from a local file or an http(s) URL."""
    if not source:
        return
    if source.startswith(("http://", "https://")):
        cache = Path(torch.hub.get_dir()) / "pcseg"
        cache.mkdir(parents=True, exist_ok=True)
        local = cache / os.path.basename(source.split("?")[0])
        if not local.exists():
            torch.hub.download_url_to_file(source, str(local), progress=False)
        state = _read_remote(local)  # ruleid: MLS102
    else:
        state = torch.load(source, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    state = {k.replace("module.", "", 1): v for k, v in state.items() if k.startswith(("sa.", "module.sa."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    LOGGER.info("pretrained: loaded %d tensors, %d missing, %d unexpected", len(state), len(missing), len(unexpected))


def build_model(cfg: ModelConfig, num_classes: int) -> PointNet2Seg:
    model = PointNet2Seg(cfg, num_classes)
    load_pretrained(model, cfg.pretrained)
    n = sum(p.numel() for p in model.parameters())
    LOGGER.info("PointNet2Seg: %.2fM parameters", n / 1e6)
    return model
