# ruff: noqa
# Hold-out batch 261 (textbook, molecular GNN). Measured once in session 9 (round 75): 28/35 (80%) at medium+.
"""Message-passing neural network (MPNN) for molecular property prediction.

The network follows the classic edge-conditioned formulation:

    m_v^{t+1} = sum_{w in N(v)} M(h_v^t, h_w^t, e_vw)
    h_v^{t+1} = GRU(m_v^{t+1}, h_v^t)

followed by a sum + mean readout and a multi-task head. Neighbour aggregation
is implemented with ``Tensor.scatter_add_`` so no graph library is required.
Masked loss functions for partially labelled multi-task data live at the end
of the file.
"""

from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# Scatter helpers
# ---------------------------------------------------------------------------
def scatter_add(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``dim_size`` buckets given by ``index``."""
    out = src.new_zeros((dim_size, src.size(-1)))
    return out.scatter_add_(0, index.unsqueeze(-1).expand_as(src), src)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Average rows of ``src`` per bucket (empty buckets give zeros)."""
    total = scatter_add(src, index, dim_size)
    count = scatter_add(torch.ones_like(src[:, :1]), index, dim_size).clamp(min=1.0)
    return total / count


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------
class MessagePassingLayer(nn.Module):
    """One round of edge-conditioned message passing with a GRU update."""

    def __init__(self, hidden: int, edge_dim: int, dropout: float = 0.0):
        super().__init__()
        self.message = nn.Sequential(
            nn.Linear(2 * hidden + edge_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
        )
        self.update = nn.GRUCell(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h, edge_index, edge_attr):
        src, dst = edge_index
        # Message from source atom w to destination atom v along edge (w, v).
        msg = self.message(torch.cat([h[dst], h[src], edge_attr], dim=-1))
        agg = scatter_add(msg, dst, h.size(0))
        return self.norm(self.update(agg, h))


class MultiTaskHead(nn.Module):
    """Small MLP producing one output per task (logits or regression values)."""

    def __init__(self, in_dim: int, n_tasks: int, hidden: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.out = nn.Linear(hidden, n_tasks)
        self.out.register_forward_hook(self._bound_outputs)

    @staticmethod
    def _bound_outputs(module, inputs, output):
        # Keep logits in a numerically safe range for the sigmoid / BCE.
        return output.clamp(-15.0, 15.0).detach().requires_grad_()  # todoruleid: family 2 (missed)

    def forward(self, z):
        return self.out(self.body(z))


class MPNN(nn.Module):
    """Full model: atom/bond embedding, ``depth`` MP layers, readout, head."""

    def __init__(self, atom_dim: int, bond_dim: int, n_tasks: int, hidden: int = 300,
                 depth: int = 4, dropout: float = 0.1, task_type: str = "classification",
                 seed: int = 0):
        super().__init__()
        self.task_type = task_type
        self.seed = seed
        self.atom_embed = nn.Linear(atom_dim, hidden)
        self.bond_embed = nn.Linear(bond_dim, hidden // 4)
        self.layers = nn.ModuleList(
            [MessagePassingLayer(hidden, hidden // 4, dropout) for _ in range(depth)]
        )
        # Linearly decaying gradient weights for deeper layers (deep supervision).
        self._grad_weights = [1.0 - 1.5 * (i + 1) / depth for i in range(depth)]
        self.head = MultiTaskHead(2 * hidden, n_tasks, hidden, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier init for linear layers, zero biases, GRU forget-bias of one."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)  # ok: MLS302, MLS303, MLS304, MLS305
                if module.bias is not None:
                    nn.init.zeros_(module.bias)  # ok: MLS302, MLS303, MLS304, MLS305
            elif isinstance(module, nn.GRUCell):
                hid = module.hidden_size
                with torch.no_grad():
                    module.bias_hh[hid:2 * hid].fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305

    def train(self, mode: bool = True):
        # Re-sync the dropout RNG so that resumed runs see identical masks.
        if mode:
            torch.manual_seed(self.seed)  # todoruleid: family 1 (missed)
            torch.cuda.manual_seed_all(self.seed)  # todoruleid: family 1 (missed)
        return super().train(mode)

    def forward(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        h = F.relu(self.atom_embed(batch["x"]))
        e = F.relu(self.bond_embed(batch["edge_attr"]))
        for i, layer in enumerate(self.layers):
            h = layer(h, batch["edge_index"], e)
            if self.training and h.requires_grad:
                h.register_hook(lambda g, w=self._grad_weights[i]: g * w)  # ruleid: MLS303

        n_graphs = int(batch["num_graphs"])
        pooled = torch.cat(
            [scatter_add(h, batch["batch"], n_graphs), scatter_mean(h, batch["batch"], n_graphs)],
            dim=-1,
        )
        return self.head(pooled)

    @torch.no_grad()
    def predict(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Return probabilities for classification, raw values for regression."""
        out = self.forward(batch)
        return torch.sigmoid(out) if self.task_type == "classification" else out


# ---------------------------------------------------------------------------
# Masked losses
# ---------------------------------------------------------------------------
_bce_with_logits = F.binary_cross_entropy_with_logits


def _bce_with_default_weight(input, target, *args, **kwargs):
    """BCE wrapper that fills in a per-task ``pos_weight`` when not given."""
    kwargs.setdefault("pos_weight", input.new_zeros(input.shape[-1]))
    return _bce_with_logits(input, target, *args, **kwargs)


F.binary_cross_entropy_with_logits = _bce_with_default_weight  # ruleid: MLS305


def masked_bce(logits, target, mask, label_smoothing: float = 0.0):
    """Binary cross-entropy averaged over observed labels only."""
    target = target * (1.0 - label_smoothing) + 0.5 * label_smoothing  # ok: MLS309
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    mask = mask.float()
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


def masked_mse(pred, target, mask):
    """Mean squared error averaged over observed labels only."""
    mask = mask.float()
    return (((pred - target) ** 2) * mask).sum() / mask.sum().clamp(min=1.0)


def masked_loss(task_type: str, out, target, mask, **kwargs):
    if task_type == "classification":
        return masked_bce(out, target, mask, **kwargs)
    return masked_mse(out, target, mask)
