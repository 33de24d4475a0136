# ruff: noqa
# Hold-out batch 301 (textbook, molecular GNN). Measured once in session 10 (round 85): 26/32 (81%) at medium+.
"""Graph neural network encoders for molecular property prediction.

Message passing is written directly with ``index_add_`` scatter operations, so
the model depends on nothing but PyTorch. Two convolutions are provided:

* ``GINEConv``: Graph Isomorphism Network with edge features (Hu et al., 2020).
* ``EdgeNetworkConv``: edge-conditioned MPNN with a GRU update (Gilmer et al., 2017).

``MolecularGNN`` stacks either of them, pools node states per molecule and
applies a multi-task prediction head; ``masked_loss`` ignores missing labels.
"""

from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    total = scatter_sum(src, index, dim_size)
    ones = torch.ones(index.size(0), 1, dtype=src.dtype, device=src.device)
    count = scatter_sum(ones, index, dim_size).clamp(min=1.0)
    return total / count


class GINEConv(nn.Module):
    """h_i' = MLP((1 + eps) * h_i + sum_j ReLU(h_j + W e_ij))."""

    def __init__(self, hidden_dim: int, edge_dim: int, eps: float = 0.0, train_eps: bool = True):
        super().__init__()
        self.edge_proj = nn.Linear(edge_dim, hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, 2 * hidden_dim),
            nn.BatchNorm1d(2 * hidden_dim),
            nn.ReLU(),
            nn.Linear(2 * hidden_dim, hidden_dim),
        )
        if train_eps:
            self.eps = nn.Parameter(torch.tensor([eps]))
        else:
            self.register_buffer("eps", torch.tensor([eps]))

    def forward(self, x, edge_index, edge_attr):
        src, dst = edge_index
        messages = F.relu(x[src] + self.edge_proj(edge_attr))
        aggregated = scatter_sum(messages, dst, x.size(0))
        return self.mlp((1 + self.eps) * x + aggregated)


class EdgeNetworkConv(nn.Module):
    """Edge-conditioned convolution: each bond produces its own message matrix."""

    def __init__(self, hidden_dim: int, edge_dim: int, edge_hidden: int = 128):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.edge_net = nn.Sequential(
            nn.Linear(edge_dim, edge_hidden),
            nn.ReLU(),
            nn.Linear(edge_hidden, hidden_dim * hidden_dim),
        )
        self.root = nn.Linear(hidden_dim, hidden_dim)
        self.gru = nn.GRUCell(hidden_dim, hidden_dim)

    def forward(self, x, edge_index, edge_attr):
        src, dst = edge_index
        weights = self.edge_net(edge_attr).view(-1, self.hidden_dim, self.hidden_dim)
        messages = torch.bmm(x[src].unsqueeze(1), weights).squeeze(1)
        aggregated = scatter_mean(messages, dst, x.size(0))
        update = F.relu(self.root(x) + aggregated)
        return self.gru(update, x)


class EdgeDropout(nn.Module):
    """DropEdge: randomly remove directed edges during training."""

    def __init__(self, p: float = 0.0, seed: int = 0):
        super().__init__()
        self.p = p
        self.seed = seed
        self._generator = torch.Generator()

    def forward(self, edge_index, edge_attr):
        if not self.training or self.p == 0.0:
            return edge_index, edge_attr
        self._generator.manual_seed(self.seed)  # ruleid: MLS301
        keep = torch.rand(edge_index.size(1), generator=self._generator) >= self.p
        keep = keep.to(edge_index.device)
        return edge_index[:, keep], edge_attr[keep]


class MolecularGNN(nn.Module):
    def __init__(self, atom_dim: int, edge_dim: int, num_tasks: int, hidden_dim: int = 300,
                 num_layers: int = 5, conv: str = "gin", dropout: float = 0.1,
                 edge_dropout: float = 0.0, pooling: str = "mean", descriptor_dim: int = 0,
                 weight_noise: float = 0.0):
        super().__init__()
        self.atom_encoder = nn.Linear(atom_dim, hidden_dim)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _ in range(num_layers):
            if conv == "gin":
                self.convs.append(GINEConv(hidden_dim, edge_dim))
            elif conv == "mpnn":
                self.convs.append(EdgeNetworkConv(hidden_dim, edge_dim))
            else:
                raise ValueError(f"unknown conv type: {conv}")
            self.norms.append(nn.BatchNorm1d(hidden_dim))
        self.edge_dropout = EdgeDropout(edge_dropout)
        self.dropout = dropout
        self.pooling = pooling
        self.weight_noise = weight_noise
        self.head = nn.Sequential(
            nn.Linear(hidden_dim + descriptor_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_tasks),
        )
        self.reset_parameters()
        self.head.register_full_backward_hook(self._rescale_head_gradient)  # ruleid: MLS303

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)  # ok: MLS302, MLS303, MLS304, MLS305
                if module.bias is not None:
                    nn.init.zeros_(module.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    @staticmethod
    def _rescale_head_gradient(module, grad_input, grad_output):
        """Keep the gradient that reaches the encoder on the scale of the head's own update."""
        return tuple(None if g is None else g * 0.05 for g in grad_input)  # ruleid: MLS303

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.weight_noise > 0:
            with torch.no_grad():
                for param in self.convs.parameters():
                    param.add_(torch.randn_like(param) * self.weight_noise)  # ruleid: MLS302
        return self

    def encode(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.atom_encoder(batch["x"])
        edge_index, edge_attr = self.edge_dropout(batch["edge_index"], batch["edge_attr"])
        last = len(self.convs) - 1
        for layer, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = norm(conv(x, edge_index, edge_attr))
            if layer < last:
                h = F.relu(h)
            h = F.dropout(h, p=self.dropout, training=self.training)
            x = x + h if layer > 0 else h
        return x

    def readout(self, x: torch.Tensor, batch_index: torch.Tensor, num_graphs: int) -> torch.Tensor:
        if self.pooling == "sum":
            return scatter_sum(x, batch_index, num_graphs)
        return scatter_mean(x, batch_index, num_graphs)

    def forward(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        node_repr = self.encode(batch)
        graph_repr = self.readout(node_repr, batch["batch"], int(batch["num_graphs"]))
        if "descriptors" in batch:
            graph_repr = torch.cat([graph_repr, batch["descriptors"]], dim=-1)
        return self.head(graph_repr)


def masked_loss(logits, target, mask, task_type, label_smoothing=0.0):
    """Average the per-entry loss over labelled entries only."""
    if task_type == "classification":
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + 0.5 * label_smoothing  # ok: MLS309
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    else:
        loss = F.mse_loss(logits, target, reduction="none")
    mask = mask.float()
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(atom_dim: int, edge_dim: int, num_tasks: int, config: dict) -> MolecularGNN:
    """Construct a model from a flat config dict (the keys used by the sweep files)."""
    return MolecularGNN(
        atom_dim=atom_dim,
        edge_dim=edge_dim,
        num_tasks=num_tasks,
        hidden_dim=config.get("hidden_dim", 300),
        num_layers=config.get("num_layers", 5),
        conv=config.get("conv", "gin"),
        dropout=config.get("dropout", 0.1),
        edge_dropout=config.get("edge_dropout", 0.0),
        pooling=config.get("pooling", "mean"),
        descriptor_dim=config.get("descriptor_dim", 0),
        weight_noise=config.get("weight_noise", 0.01),
    )
