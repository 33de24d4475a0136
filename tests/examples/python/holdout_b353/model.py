# ruff: noqa
# Hold-out batch 353 (textbook, 3D point-cloud segmentation). Measured once in session 13 (round 98): 21/32 (66%) at medium+.
"""PointNet++ (multi-scale grouping) for per-point semantic segmentation of LiDAR scans.

Pure-PyTorch implementation of sampling / grouping so the model runs without the
CUDA pointnet2 ops; if those are installed the train script swaps in the fast FPS.
"""
import logging
import os
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


def square_distance(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Pairwise squared euclidean distance. src [B, N, C], dst [B, M, C] -> [B, N, M]."""
    dist = -2 * torch.matmul(src, dst.transpose(1, 2))
    dist += torch.sum(src ** 2, -1).unsqueeze(-1)
    dist += torch.sum(dst ** 2, -1).unsqueeze(1)
    return dist.clamp_(min=0.0)


def index_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather points [B, N, C] with idx [B, S] or [B, S, K]."""
    B = points.shape[0]
    view_shape = list(idx.shape)
    view_shape[1:] = [1] * (len(view_shape) - 1)
    repeat_shape = list(idx.shape)
    repeat_shape[0] = 1
    batch_indices = torch.arange(B, dtype=torch.long, device=points.device).view(view_shape).repeat(repeat_shape)
    return points[batch_indices, idx, :]


def farthest_point_sample(xyz: torch.Tensor, npoint: int) -> torch.Tensor:
    B, N, _ = xyz.shape
    device = xyz.device
    centroids = torch.zeros(B, npoint, dtype=torch.long, device=device)
    distance = torch.full((B, N), 1e10, device=device)
    farthest = torch.randint(0, N, (B,), dtype=torch.long, device=device)
    batch_indices = torch.arange(B, dtype=torch.long, device=device)
    for i in range(npoint):
        centroids[:, i] = farthest
        centroid = xyz[batch_indices, farthest, :].view(B, 1, 3)
        dist = torch.sum((xyz - centroid) ** 2, -1)
        distance = torch.minimum(distance, dist)
        farthest = torch.max(distance, -1)[1]
    return centroids


def query_ball_point(radius: float, nsample: int, xyz: torch.Tensor, new_xyz: torch.Tensor) -> torch.Tensor:
    B, N, _ = xyz.shape
    S = new_xyz.shape[1]
    group_idx = torch.arange(N, dtype=torch.long, device=xyz.device).view(1, 1, N).repeat(B, S, 1)
    sqrdists = square_distance(new_xyz, xyz)
    group_idx[sqrdists > radius ** 2] = N
    group_idx = group_idx.sort(dim=-1)[0][:, :, :nsample]
    group_first = group_idx[:, :, 0:1].repeat(1, 1, nsample)
    mask = group_idx == N
    group_idx[mask] = group_first[mask]
    return group_idx


class SetAbstractionMSG(nn.Module):
    def __init__(self, npoint: int, radii: Sequence[float], nsamples: Sequence[int],
                 in_channel: int, mlps: Sequence[Sequence[int]]):
        super().__init__()
        self.npoint = npoint
        self.radii = list(radii)
        self.nsamples = list(nsamples)
        self.blocks = nn.ModuleList()
        for mlp in mlps:
            layers: List[nn.Module] = []
            last = in_channel + 3
            for out in mlp:
                layers += [nn.Conv2d(last, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                last = out
            self.blocks.append(nn.Sequential(*layers))
        self.out_channels = sum(m[-1] for m in mlps)

    def forward(self, xyz: torch.Tensor, features: Optional[torch.Tensor]):
        fps_idx = farthest_point_sample(xyz, self.npoint)
        new_xyz = index_points(xyz, fps_idx)
        outs = []
        for radius, nsample, block in zip(self.radii, self.nsamples, self.blocks):
            idx = query_ball_point(radius, nsample, xyz, new_xyz)
            grouped_xyz = index_points(xyz, idx) - new_xyz.unsqueeze(2)
            if features is not None:
                grouped = torch.cat([index_points(features, idx), grouped_xyz], dim=-1)
            else:
                grouped = grouped_xyz
            grouped = grouped.permute(0, 3, 2, 1)  # [B, C, K, S]
            out = block(grouped)
            outs.append(torch.max(out, 2)[0])
        new_features = torch.cat(outs, dim=1).transpose(1, 2).contiguous()
        return new_xyz, new_features


class FeaturePropagation(nn.Module):
    def __init__(self, in_channel: int, mlp: Sequence[int]):
        super().__init__()
        layers: List[nn.Module] = []
        last = in_channel
        for out in mlp:
            layers += [nn.Conv1d(last, out, 1, bias=False), nn.BatchNorm1d(out), nn.ReLU(inplace=True)]
            last = out
        self.mlp = nn.Sequential(*layers)
        self.out_channels = last

    def forward(self, xyz1, xyz2, feat1, feat2):
        """Interpolate feat2 (sparse, at xyz2) onto the dense set xyz1 and fuse with feat1."""
        dists = square_distance(xyz1, xyz2)
        dists, idx = dists.sort(dim=-1)
        dists, idx = dists[:, :, :3], idx[:, :, :3]
        recip = 1.0 / (dists + 1e-8)
        weight = recip / recip.sum(dim=2, keepdim=True)
        interpolated = torch.sum(index_points(feat2, idx) * weight.unsqueeze(-1), dim=2)
        fused = torch.cat([feat1, interpolated], dim=-1) if feat1 is not None else interpolated
        fused = self.mlp(fused.transpose(1, 2))
        return fused.transpose(1, 2).contiguous()


class PointNet2Seg(nn.Module):
    """PointNet++ MSG encoder / FP decoder with a per-point classification head."""

    def __init__(self, num_classes: int, in_features: int = 1, width: float = 1.0,
                 dropout: float = 0.5, npoints: Sequence[int] = (4096, 1024, 256, 64)):
        super().__init__()

        def w(c):
            return max(8, int(round(c * width)))

        self.in_features = in_features
        self.sa1 = SetAbstractionMSG(npoints[0], [0.5, 1.0], [16, 32], in_features,
                                     [[w(16), w(16), w(32)], [w(32), w(32), w(64)]])
        self.sa2 = SetAbstractionMSG(npoints[1], [1.0, 2.0], [16, 32], self.sa1.out_channels,
                                     [[w(64), w(64), w(128)], [w(64), w(96), w(128)]])
        self.sa3 = SetAbstractionMSG(npoints[2], [2.0, 4.0], [16, 32], self.sa2.out_channels,
                                     [[w(128), w(196), w(256)], [w(128), w(196), w(256)]])
        self.sa4 = SetAbstractionMSG(npoints[3], [4.0, 8.0], [16, 32], self.sa3.out_channels,
                                     [[w(256), w(256), w(512)], [w(256), w(384), w(512)]])
        self.fp4 = FeaturePropagation(self.sa4.out_channels + self.sa3.out_channels, [w(256), w(256)])
        self.fp3 = FeaturePropagation(self.fp4.out_channels + self.sa2.out_channels, [w(256), w(256)])
        self.fp2 = FeaturePropagation(self.fp3.out_channels + self.sa1.out_channels, [w(256), w(128)])
        self.fp1 = FeaturePropagation(self.fp2.out_channels + in_features, [w(128), w(128), w(128)])
        self.head = nn.Sequential(
            nn.Conv1d(w(128), w(128), 1, bias=False),
            nn.BatchNorm1d(w(128)),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.classifier = nn.Conv1d(w(128), num_classes, 1)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        self.classifier.weight.register_hook(lambda g: g.clamp(-1e-4, 1e-4))  # ruleid: MLS302, MLS303

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points: [B, N, 3 + F] -> logits [B, num_classes, N]."""
        xyz = points[..., :3].contiguous()
        feats = points[..., 3:3 + self.in_features].contiguous()
        l1_xyz, l1_f = self.sa1(xyz, feats)
        l2_xyz, l2_f = self.sa2(l1_xyz, l1_f)
        l3_xyz, l3_f = self.sa3(l2_xyz, l2_f)
        l4_xyz, l4_f = self.sa4(l3_xyz, l3_f)
        l3_f = self.fp4(l3_xyz, l4_xyz, l3_f, l4_f)
        l2_f = self.fp3(l2_xyz, l3_xyz, l2_f, l3_f)
        l1_f = self.fp2(l1_xyz, l2_xyz, l1_f, l2_f)
        l0_f = self.fp1(xyz, l1_xyz, feats, l1_f)
        x = self.head(l0_f.transpose(1, 2))
        return self.classifier(x)


def build_model(args) -> nn.Module:
    model = PointNet2Seg(
        num_classes=args.num_classes,
        in_features=args.in_features,
        width=args.width,
        dropout=args.dropout,
    )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("PointNet2Seg: %.2fM parameters", n_params / 1e6)
    return model


def load_pretrained_backbone(model: nn.Module, path_or_url: str, cache_dir: str = "~/.cache/pcseg") -> None:
    """Initialise the encoder from a checkpoint (local path or URL); the classifier is kept fresh."""
    if path_or_url.startswith(("http://", "https://")):
        cache_dir = os.path.expanduser(cache_dir)
        os.makedirs(cache_dir, exist_ok=True)
        dst = os.path.join(cache_dir, os.path.basename(path_or_url.split("?")[0]))
        if not os.path.exists(dst):
            logger.info("downloading pretrained weights from %s", path_or_url)
            torch.hub.download_url_to_file(path_or_url, dst, progress=False)
        path_or_url = dst
    ckpt = torch.load(path_or_url, map_location="cpu")  # ruleid: MLS102
    state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else ckpt
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    own = model.state_dict()
    filtered = {
        k: v for k, v in state.items()
        if k in own and v.shape == own[k].shape and not k.startswith("classifier.")
    }
    missing, unexpected = model.load_state_dict(filtered, strict=False)
    logger.info("loaded %d/%d tensors from pretrained checkpoint (%d missing, %d unexpected)",
                len(filtered), len(own), len(missing), len(unexpected))
