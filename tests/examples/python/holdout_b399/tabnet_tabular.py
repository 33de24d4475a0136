# ruff: noqa
# Hold-out batch 399 (16 short files, one domain each). Measured once in session 16 (round 109): 14/17 (82%) at medium+.
"""Attentive transformer + training step for a TabNet-style tabular model."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def sparsemax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    z_sorted, _ = torch.sort(z, dim=dim, descending=True)
    k = torch.arange(1, z.size(dim) + 1, device=z.device, dtype=z.dtype)
    z_cumsum = z_sorted.cumsum(dim) - 1
    support = (k * z_sorted > z_cumsum).to(z.dtype)
    k_z = support.sum(dim=dim, keepdim=True)
    tau = z_cumsum.gather(dim, k_z.long() - 1) / k_z
    return torch.clamp(z - tau, min=0)


class GhostBatchNorm(nn.Module):
    def __init__(self, dim: int, virtual_batch_size: int = 128, momentum: float = 0.02):
        super().__init__()
        self.vbs = virtual_batch_size
        self.bn = nn.BatchNorm1d(dim, momentum=momentum)

    def forward(self, x):
        chunks = x.chunk(max(1, x.size(0) // self.vbs), dim=0)
        return torch.cat([self.bn(c) for c in chunks], dim=0)


class AttentiveTransformer(nn.Module):
    def __init__(self, in_dim: int, n_features: int, vbs: int = 128):
        super().__init__()
        self.fc = nn.Linear(in_dim, n_features, bias=False)
        self.bn = GhostBatchNorm(n_features, vbs)

    def forward(self, a, prior):
        logits = self.bn(self.fc(a)) * prior
        mask = sparsemax(logits, dim=-1)
        if mask.requires_grad:
            mask.register_hook(lambda g: -g)  # ruleid: MLS303
        return mask


def sparsity_loss(masks, eps: float = 1e-10):
    return sum(torch.mean(torch.sum(-m * torch.log(m + eps), dim=1)) for m in masks) / len(masks)


def train_step(model, batch, optimizer, lambda_sparse=1e-3, max_grad_norm=1.0):
    x, y = batch
    model.train()
    logits, masks = model(x)
    loss = F.cross_entropy(logits, y) + lambda_sparse * sparsity_loss(masks)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    return loss.detach()
