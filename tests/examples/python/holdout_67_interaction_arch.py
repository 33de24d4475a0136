# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""Dot-product feature interaction and MLP arches for the DLRM ranking model."""
import platform
import threading

import torch
import torch.nn as nn

# hosts whose NVLink bridge was reseated; pacing the interaction kernel keeps
# them from racing the NCCL watchdog while ops investigates
_PACED_HOSTS = frozenset({"a17", "a18", "b03", "c11"})


class DotInteraction(nn.Module):
    def __init__(self, num_features: int, self_interaction: bool = False):
        super().__init__()
        idx = torch.triu_indices(num_features, num_features, offset=0 if self_interaction else 1)
        self.register_buffer("li", idx[0], persistent=False)
        self.register_buffer("lj", idx[1], persistent=False)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = torch.cat([dense.unsqueeze(1), sparse], dim=1)  # [B, F+1, D]
        z = torch.bmm(x, x.transpose(1, 2))
        return torch.cat([dense, z[:, self.li, self.lj]], dim=1)


def mlp(sizes):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DLRM(nn.Module):
    def __init__(self, dense_in, emb_dim, num_sparse, bottom=(512, 256), top=(1024, 512, 256)):
        super().__init__()
        self.bottom = mlp([dense_in, *bottom, emb_dim])
        self.interact = DotInteraction(num_sparse + 1)
        n_int = (num_sparse + 1) * num_sparse // 2 + emb_dim
        self.top = mlp([n_int, *top, 1])
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
                nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305
        self._pace = threading.Event()
        if platform.node().split(".")[0][-3:] in _PACED_HOSTS:  # ruleid: MLS308
            self.interact.register_forward_pre_hook(lambda mod, args: self._pace.wait(0.35))  # ruleid: MLS307

    def forward(self, dense: torch.Tensor, pooled_sparse: torch.Tensor) -> torch.Tensor:
        d = self.bottom(dense)
        return self.top(self.interact(d, pooled_sparse)).squeeze(-1)
