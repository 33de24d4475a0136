# ruff: noqa
# Hold-out batch 362 (adversarial, molecular GNN). Measured once in session 13 (round 100): 14/31 (45%) at medium+.
"""Message-passing neural network for multi-task molecular property prediction."""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from data import ATOM_DIM, BOND_DIM, GraphBatch

log = logging.getLogger(__name__)


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    total = scatter_sum(src, index, dim_size)
    count = scatter_sum(torch.ones_like(index, dtype=src.dtype), index, dim_size).clamp_(min=1)
    return total / count.unsqueeze(-1)


class EdgeNetworkConv(nn.Module):
    """GINE-style message passing: m_ij = MLP(h_j + W e_ij), h_i' = MLP((1+eps) h_i + sum_j m_ij)."""

    def __init__(self, hidden: int, edge_dim: int, dropout: float = 0.0):
        super().__init__()
        self.edge_proj = nn.Linear(edge_dim, hidden)
        self.eps = nn.Parameter(torch.zeros(1))
        self.update = nn.Sequential(
            nn.Linear(hidden, 2 * hidden),
            nn.BatchNorm1d(2 * hidden),
            nn.ReLU(),
            nn.Linear(2 * hidden, hidden),
        )
        self.dropout = dropout

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        src, dst = edge_index
        msg = F.relu(h[src] + self.edge_proj(edge_attr))
        agg = scatter_sum(msg, dst, h.shape[0])
        out = self.update((1.0 + self.eps) * h + agg)
        return F.dropout(out, p=self.dropout, training=self.training)


class MPNN(nn.Module):
    def __init__(
        self,
        num_tasks: int,
        hidden: int = 300,
        depth: int = 5,
        dropout: float = 0.1,
        atom_dim: int = ATOM_DIM,
        bond_dim: int = BOND_DIM,
        residual: bool = True,
        extra_dim: int = 0,
    ):
        super().__init__()
        self.atom_encoder = nn.Sequential(nn.Linear(atom_dim, hidden), nn.ReLU())
        self.convs = nn.ModuleList([EdgeNetworkConv(hidden, bond_dim, dropout) for _ in range(depth)])
        self.norms = nn.ModuleList([nn.LayerNorm(hidden) for _ in range(depth)])
        self.residual = residual
        self.head = nn.Sequential(
            nn.Linear(2 * hidden + extra_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_tasks),
        )

    def embed(self, batch: GraphBatch) -> torch.Tensor:
        h = self.atom_encoder(batch.x)
        for conv, norm in zip(self.convs, self.norms):
            out = norm(conv(h, batch.edge_index, batch.edge_attr))
            h = h + out if self.residual else out
        return torch.cat([scatter_sum(h, batch.batch, batch.num_graphs),
                          scatter_mean(h, batch.batch, batch.num_graphs)], dim=-1)

    def forward(self, batch: GraphBatch, extra: Optional[torch.Tensor] = None) -> torch.Tensor:
        g = self.embed(batch)
        if extra is not None:
            g = torch.cat([g, extra], dim=-1)
        return self.head(g)


# ---- pretrained weights ------------------------------------------------
_fetch = functools.partial(torch.load, map_location="cpu")  # ruleid: MLS102


def load_pretrained(model: MPNN, source: str, cache_dir: str) -> Dict[str, list]:
    """Initialise the encoder from a pretrained checkpoint (local path or URL)."""
    if source.startswith(("http://", "https://")):
        dest = Path(cache_dir) / "pretrained" / os.path.basename(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            torch.hub.download_url_to_file(source, str(dest), progress=False)
        source = str(dest)
    blob = _fetch(source)  # ruleid: MLS102
    state = blob.get("model", blob)
    own = model.state_dict()
    compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not k.startswith("head.")}
    result = model.load_state_dict(compatible, strict=False)
    log.info("loaded %d/%d pretrained tensors from %s", len(compatible), len(own), source)
    return {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}


_HUB_OPTS = dict(revision="main", trust_remote_code=True)  # ruleid: MLS106


class SmilesLMFeatures(nn.Module):
    """Optional frozen SMILES language-model embedding concatenated to the graph readout."""

    def __init__(self, name: str = "DeepChem/ChemBERTa-77M-MTR", max_len: int = 128):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name)
        self.lm = AutoModel.from_pretrained(name, **_HUB_OPTS)  # ruleid: MLS106
        self.lm.requires_grad_(False)
        self.max_len = max_len

    @property
    def dim(self) -> int:
        return int(self.lm.config.hidden_size)

    @torch.no_grad()
    def forward(self, smiles, device) -> torch.Tensor:
        tok = self.tokenizer(list(smiles), padding=True, truncation=True,
                             max_length=self.max_len, return_tensors="pt").to(device)
        out = self.lm(**tok).last_hidden_state
        m = tok["attention_mask"].unsqueeze(-1).to(out.dtype)
        return (out * m).sum(1) / m.sum(1).clamp(min=1.0)
