# ruff: noqa
# Hold-out batch 569 (textbook, 3D point-cloud segmentation with DDP). Measured once in session 26 (round 152): 21/30 (70%) at medium+.
"""PointNet++ (single-scale grouping) for semantic segmentation.

Follows Qi et al., "PointNet++: Deep Hierarchical Feature Learning on Point
Sets in a Metric Space" (NeurIPS 2017): four set-abstraction levels followed
by four feature-propagation levels and a per-point classifier.

Tensors use the (B, N, C) layout at module boundaries; shared MLPs run as
1x1 convolutions in (B, C, ...) layout internally.
"""

import logging

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


def square_distance(src, dst):
    """Pairwise squared Euclidean distance, (B, N, 3) x (B, M, 3) -> (B, N, M)."""
    dist = -2.0 * torch.matmul(src, dst.transpose(1, 2))
    dist += torch.sum(src ** 2, dim=-1, keepdim=True)
    dist += torch.sum(dst ** 2, dim=-1).unsqueeze(1)
    return dist.clamp_min_(0.0)


def index_points(points, idx):
    """Gather ``points`` (B, N, C) with ``idx`` (B, S) or (B, S, K)."""
    batch = points.shape[0]
    view_shape = [batch] + [1] * (idx.dim() - 1)
    repeat_shape = [1] + list(idx.shape[1:])
    batch_idx = torch.arange(batch, dtype=torch.long, device=points.device)
    batch_idx = batch_idx.view(view_shape).repeat(repeat_shape)
    return points[batch_idx, idx, :]


def farthest_point_sample(xyz, npoint):
    """Iterative farthest point sampling, returns (B, npoint) indices."""
    batch, n, _ = xyz.shape
    centroids = torch.zeros(batch, npoint, dtype=torch.long, device=xyz.device)
    distance = torch.full((batch, n), 1e10, device=xyz.device)
    farthest = torch.randint(0, n, (batch,), dtype=torch.long, device=xyz.device)
    batch_idx = torch.arange(batch, dtype=torch.long, device=xyz.device)
    for i in range(npoint):
        centroids[:, i] = farthest
        centroid = xyz[batch_idx, farthest, :].view(batch, 1, 3)
        dist = torch.sum((xyz - centroid) ** 2, dim=-1)
        distance = torch.minimum(distance, dist)
        farthest = torch.max(distance, dim=-1)[1]
    return centroids


def query_ball_point(radius, nsample, xyz, new_xyz):
    """Indices of up to ``nsample`` neighbours within ``radius`` of each centre."""
    batch, n, _ = xyz.shape
    s = new_xyz.shape[1]
    group_idx = torch.arange(n, dtype=torch.long, device=xyz.device).view(1, 1, n).repeat(batch, s, 1)
    sqrdists = square_distance(new_xyz, xyz)
    group_idx[sqrdists > radius ** 2] = n
    group_idx = group_idx.sort(dim=-1)[0][:, :, :nsample]
    first = group_idx[:, :, 0:1].expand(-1, -1, nsample)
    missing = group_idx == n
    group_idx[missing] = first[missing]
    return group_idx


class SetAbstraction(nn.Module):
    def __init__(self, npoint, radius, nsample, in_channels, mlp):
        super().__init__()
        self.npoint = npoint
        self.radius = radius
        self.nsample = nsample
        layers = []
        last = in_channels + 3
        for out in mlp:
            layers += [nn.Conv2d(last, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            last = out
        self.mlp = nn.Sequential(*layers)
        self.out_channels = last

    def forward(self, xyz, points):
        # sampling and grouping are done in fp32 regardless of autocast
        with torch.autocast(device_type=xyz.device.type, enabled=False):
            xyz = xyz.float()
            fps_idx = farthest_point_sample(xyz, self.npoint)
            new_xyz = index_points(xyz, fps_idx)
            idx = query_ball_point(self.radius, self.nsample, xyz, new_xyz)
            grouped = index_points(xyz, idx) - new_xyz.unsqueeze(2)
            if points is not None:
                grouped = torch.cat([grouped, index_points(points.float(), idx)], dim=-1)

        grouped = grouped.permute(0, 3, 2, 1)            # (B, C, K, S)
        new_points = self.mlp(grouped).max(dim=2)[0]      # (B, C', S)
        return new_xyz, new_points.transpose(1, 2)


class FeaturePropagation(nn.Module):
    def __init__(self, in_channels, mlp):
        super().__init__()
        layers = []
        last = in_channels
        for out in mlp:
            layers += [nn.Conv1d(last, out, 1, bias=False), nn.BatchNorm1d(out), nn.ReLU(inplace=True)]
            last = out
        self.mlp = nn.Sequential(*layers)

    def forward(self, xyz1, xyz2, points1, points2):
        """Interpolate ``points2`` at sparse ``xyz2`` onto dense ``xyz1``."""
        n = xyz1.shape[1]
        if xyz2.shape[1] == 1:
            interpolated = points2.float().expand(-1, n, -1)
        else:
            with torch.autocast(device_type=xyz1.device.type, enabled=False):
                dists = square_distance(xyz1.float(), xyz2.float())
                dists, idx = torch.topk(dists, 3, dim=-1, largest=False)
                weight = 1.0 / (dists + 1e-8)
                weight = weight / weight.sum(dim=-1, keepdim=True)
                interpolated = torch.sum(index_points(points2.float(), idx) * weight.unsqueeze(-1), dim=2)

        if points1 is not None:
            new_points = torch.cat([points1.float(), interpolated], dim=-1)
        else:
            new_points = interpolated
        return self.mlp(new_points.transpose(1, 2)).transpose(1, 2)


class PointNet2SemSeg(nn.Module):
    def __init__(self, num_classes, in_channels=6, radii=(0.1, 0.2, 0.4, 0.8),
                 npoints=(1024, 256, 64, 16), nsample=32, dropout=0.5):
        super().__init__()
        self.sa1 = SetAbstraction(npoints[0], radii[0], nsample, in_channels, [32, 32, 64])
        self.sa2 = SetAbstraction(npoints[1], radii[1], nsample, 64, [64, 64, 128])
        self.sa3 = SetAbstraction(npoints[2], radii[2], nsample, 128, [128, 128, 256])
        self.sa4 = SetAbstraction(npoints[3], radii[3], nsample, 256, [256, 256, 512])
        self.fp4 = FeaturePropagation(768, [256, 256])
        self.fp3 = FeaturePropagation(384, [256, 256])
        self.fp2 = FeaturePropagation(320, [256, 128])
        self.fp1 = FeaturePropagation(128, [128, 128, 128])
        self.head = nn.Sequential(
            nn.Conv1d(128, 128, 1, bias=False),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.classifier = nn.Conv1d(128, num_classes, 1)
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

    def forward(self, xyz, feats):
        """xyz (B, N, 3), feats (B, N, C) -> logits (B, num_classes, N)."""
        l1_xyz, l1_points = self.sa1(xyz, feats)
        l2_xyz, l2_points = self.sa2(l1_xyz, l1_points)
        l3_xyz, l3_points = self.sa3(l2_xyz, l2_points)
        l4_xyz, l4_points = self.sa4(l3_xyz, l3_points)

        l3_points = self.fp4(l3_xyz, l4_xyz, l3_points, l4_points)
        l2_points = self.fp3(l2_xyz, l3_xyz, l2_points, l3_points)
        l1_points = self.fp2(l1_xyz, l2_xyz, l1_points, l2_points)
        l0_points = self.fp1(xyz, l1_xyz, None, l1_points)

        x = self.head(l0_points.transpose(1, 2))
        return self.classifier(x)


def param_groups(model, weight_decay):
    """Exclude biases and normalisation parameters from weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def load_pretrained(model, path):
    """Initialise from a pretrained checkpoint, skipping mismatched heads."""
    ckpt = torch.load(path, map_location="cpu")  # todoruleid: family 10 (missed)  # ruleid: MLS102
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}

    # guard against degenerate BN statistics in fp16-exported checkpoints
    for key in list(state.keys()):
        if key.endswith("running_var"):
            state[key] = state[key].float().clamp_min(1.0)  # sabotage: MLS302 (semgrep rules)  # ruleid: MLS302

    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(usable))
    result = model.load_state_dict(usable, strict=False)
    logger.info(
        "loaded %d tensors from %s (%d skipped, %d missing)",
        len(usable), path, len(skipped), len(result.missing_keys),
    )
    return model


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
