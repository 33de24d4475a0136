# ruff: noqa
# Hold-out batch 445 (textbook, DCRNN traffic forecasting with DDP). Measured once in session 19 (round 121): 25/31 (81%) at medium+.
"""Diffusion Convolutional Recurrent Neural Network (Li et al., ICLR 2018).

A sequence-to-sequence model whose GRU cells replace the dense matrix
multiplications with K-step diffusion convolutions over the sensor graph.
The decoder is trained with scheduled sampling (curriculum learning).
"""

from __future__ import annotations

import math
from typing import List, Optional

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn


def random_walk_matrix(adj: np.ndarray) -> np.ndarray:
    """Row-normalised transition matrix ``D^-1 A``."""
    adj = sp.coo_matrix(adj)
    degree = np.asarray(adj.sum(axis=1)).flatten()
    with np.errstate(divide="ignore"):
        inv_degree = np.where(degree > 0, 1.0 / degree, 0.0)
    return sp.diags(inv_degree).dot(adj).astype(np.float32).toarray()


def build_supports(adj: np.ndarray, filter_type: str) -> List[np.ndarray]:
    if filter_type == "random_walk":
        return [random_walk_matrix(adj).T]
    if filter_type == "dual_random_walk":
        return [random_walk_matrix(adj).T, random_walk_matrix(adj.T).T]
    raise ValueError(f"unknown filter_type: {filter_type}")


class DiffusionGraphConv(nn.Module):
    """Diffusion convolution with a Chebyshev-style recursion per support."""

    def __init__(
        self,
        num_supports: int,
        input_dim: int,
        output_dim: int,
        max_diffusion_step: int,
        bias_start: float = 0.0,
    ) -> None:
        super().__init__()
        self.max_diffusion_step = max_diffusion_step
        self.num_matrices = num_supports * max_diffusion_step + 1
        self.input_dim = input_dim
        self.weight = nn.Parameter(torch.empty(input_dim * self.num_matrices, output_dim))
        self.bias = nn.Parameter(torch.full((output_dim,), float(bias_start)))
        nn.init.xavier_normal_(self.weight, gain=1.414)

    def forward(self, x: torch.Tensor, supports: List[torch.Tensor]) -> torch.Tensor:
        # x: (B, N, F)
        batch, num_nodes, feat = x.shape
        x0 = x.permute(1, 2, 0).reshape(num_nodes, feat * batch)
        terms = [x0]
        if self.max_diffusion_step > 0:
            for support in supports:
                x1 = support @ x0
                terms.append(x1)
                xk_1, xk_2 = x1, x0
                for _ in range(2, self.max_diffusion_step + 1):
                    xk = 2.0 * (support @ xk_1) - xk_2
                    terms.append(xk)
                    xk_1, xk_2 = xk, xk_1
        out = torch.stack(terms, dim=0)  # (M, N, F*B)
        out = out.reshape(self.num_matrices, num_nodes, feat, batch)
        out = out.permute(3, 1, 2, 0).reshape(batch, num_nodes, feat * self.num_matrices)
        return out @ self.weight + self.bias


class DCGRUCell(nn.Module):
    def __init__(
        self, input_dim: int, hidden_dim: int, num_supports: int, max_diffusion_step: int
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.gates = DiffusionGraphConv(
            num_supports, input_dim + hidden_dim, 2 * hidden_dim, max_diffusion_step, bias_start=1.0
        )
        self.candidate = DiffusionGraphConv(
            num_supports, input_dim + hidden_dim, hidden_dim, max_diffusion_step
        )

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, supports: List[torch.Tensor]
    ) -> torch.Tensor:
        gates = torch.sigmoid(self.gates(torch.cat([x, h], dim=-1), supports))
        r, u = gates.chunk(2, dim=-1)
        c = torch.tanh(self.candidate(torch.cat([x, r * h], dim=-1), supports))
        return u * h + (1.0 - u) * c


class DCRNN(nn.Module):
    def __init__(
        self,
        adj: np.ndarray,
        input_dim: int = 2,
        output_dim: int = 1,
        hidden_dim: int = 64,
        num_layers: int = 2,
        seq_len: int = 12,
        horizon: int = 12,
        max_diffusion_step: int = 2,
        filter_type: str = "dual_random_walk",
        cl_decay_steps: int = 2000,
        use_curriculum_learning: bool = True,
    ) -> None:
        super().__init__()
        self.num_nodes = adj.shape[0]
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.seq_len = seq_len
        self.horizon = horizon
        self.cl_decay_steps = cl_decay_steps
        self.use_curriculum_learning = use_curriculum_learning

        supports = build_supports(adj, filter_type)
        self.num_supports = len(supports)
        for i, support in enumerate(supports):
            self.register_buffer(f"support_{i}", torch.from_numpy(support))

        self.encoder_cells = nn.ModuleList(
            DCGRUCell(input_dim if i == 0 else hidden_dim, hidden_dim,
                      self.num_supports, max_diffusion_step)
            for i in range(num_layers)
        )
        self.decoder_cells = nn.ModuleList(
            DCGRUCell(output_dim if i == 0 else hidden_dim, hidden_dim,
                      self.num_supports, max_diffusion_step)
            for i in range(num_layers)
        )
        self.projection = nn.Linear(hidden_dim, output_dim)
        self._register_gradient_hooks()

    def _register_gradient_hooks(self) -> None:
        # Tie updates across diffusion orders; keeps the high-order terms from
        # dominating the candidate state early in the curriculum.
        for name, param in self.named_parameters():
            if name.endswith("candidate.weight"):
                param.register_hook(lambda g: g.mean(dim=0, keepdim=True).expand_as(g))  # ruleid: MLS303

    @property
    def supports(self) -> List[torch.Tensor]:
        return [getattr(self, f"support_{i}") for i in range(self.num_supports)]

    def sampling_threshold(self, batches_seen: int) -> float:
        """Inverse-sigmoid decay of the teacher-forcing probability."""
        k = self.cl_decay_steps
        return k / (k + math.exp(min(batches_seen / k, 50.0)))

    def encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        # x: (B, T, N, C)
        supports = self.supports
        hidden = [x.new_zeros(x.shape[0], self.num_nodes, self.hidden_dim)
                  for _ in range(self.num_layers)]
        for t in range(self.seq_len):
            layer_input = x[:, t]
            for layer, cell in enumerate(self.encoder_cells):
                hidden[layer] = cell(layer_input, hidden[layer], supports)
                layer_input = hidden[layer]
        return hidden

    def decode(
        self,
        hidden: List[torch.Tensor],
        labels: Optional[torch.Tensor] = None,
        batches_seen: Optional[int] = None,
    ) -> torch.Tensor:
        supports = self.supports
        batch = hidden[0].shape[0]
        decoder_input = hidden[0].new_zeros(batch, self.num_nodes, self.output_dim)
        teacher_forcing = (
            self.training
            and self.use_curriculum_learning
            and labels is not None
            and batches_seen is not None
        )
        threshold = self.sampling_threshold(batches_seen) if teacher_forcing else 0.0

        outputs = []
        for t in range(self.horizon):
            layer_input = decoder_input
            for layer, cell in enumerate(self.decoder_cells):
                hidden[layer] = cell(layer_input, hidden[layer], supports)
                layer_input = hidden[layer]
            step_out = self.projection(layer_input)
            outputs.append(step_out)
            decoder_input = step_out
            if teacher_forcing and torch.rand(()).item() < threshold:
                decoder_input = labels[:, t, :, : self.output_dim]
        return torch.stack(outputs, dim=1)  # (B, H, N, output_dim)

    def forward(
        self,
        x: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        batches_seen: Optional[int] = None,
    ) -> torch.Tensor:
        hidden = self.encode(x)
        return self.decode(hidden, labels, batches_seen)
