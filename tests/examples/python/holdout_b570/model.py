# ruff: noqa
# Hold-out batch 570 (adversarial, GNN molecular property prediction with Lightning). Measured once in session 26 (round 152): 14/30 (47%) at medium+.
"""Directed message-passing neural network (D-MPNN) with a multi-task head."""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict
from urllib.parse import urlparse

import torch
from torch import nn

log = logging.getLogger("molprop.model")


@dataclass
class ModelConfig:
    atom_fdim: int
    bond_fdim: int
    n_tasks: int
    hidden: int = 300
    depth: int = 3
    dropout: float = 0.0
    activation: str = "ReLU"
    aggregation: str = "mean"
    aggregation_norm: float = 100.0
    ffn_hidden: int = 300
    ffn_layers: int = 2


def build_activation(name: str) -> nn.Module:
    return getattr(nn, name)()  # ok: MLS401, MLS402, MLS403


class DMPNNEncoder(nn.Module):
    """Bond-centred message passing (Yang et al., 2019)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_i = nn.Linear(cfg.atom_fdim + cfg.bond_fdim, cfg.hidden, bias=False)
        self.W_h = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.W_o = nn.Linear(cfg.atom_fdim + cfg.hidden, cfg.hidden)
        self.act = build_activation(cfg.activation)
        self.drop = nn.Dropout(cfg.dropout)
        self.depth = cfg.depth
        self.aggregation = cfg.aggregation
        self.aggregation_norm = cfg.aggregation_norm

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor,
                rev: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        src, dst = edge_index[0], edge_index[1]
        h0 = self.act(self.W_i(torch.cat([x[src], edge_attr], dim=1)))
        h = h0
        for _ in range(self.depth - 1):
            incoming = h.new_zeros(x.size(0), h.size(1)).index_add_(0, dst, h)
            m = incoming[src] - h[rev]
            h = self.drop(self.act(h0 + self.W_h(m)))
        incoming = h.new_zeros(x.size(0), h.size(1)).index_add_(0, dst, h)
        atom_h = self.drop(self.act(self.W_o(torch.cat([x.to(h.dtype), incoming], dim=1))))
        mol_h = atom_h.new_zeros(num_graphs, atom_h.size(1)).index_add_(0, batch, atom_h)
        if self.aggregation == "mean":
            counts = torch.bincount(batch, minlength=num_graphs).clamp_min(1).unsqueeze(1)
            mol_h = mol_h / counts.to(mol_h.dtype)
        elif self.aggregation == "norm":
            mol_h = mol_h / self.aggregation_norm
        return mol_h


class MultiTaskHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers = []
        d = cfg.hidden
        for _ in range(cfg.ffn_layers - 1):
            layers += [nn.Dropout(cfg.dropout), nn.Linear(d, cfg.ffn_hidden), build_activation(cfg.activation)]
            d = cfg.ffn_hidden
        self.body = nn.Sequential(*layers)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(d, cfg.n_tasks)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.body(h)))


class MolPropModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = DMPNNEncoder(cfg)
        self.head = MultiTaskHead(cfg)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            (nn.init.zeros_ if p.dim() == 1 else nn.init.xavier_normal_)(p)

    def embed(self, batch) -> torch.Tensor:
        return self.encoder(batch.x, batch.edge_index, batch.edge_attr, batch.rev, batch.batch, batch.num_graphs)

    def forward(self, batch) -> torch.Tensor:
        return self.head(self.embed(batch))


_SAFE_LOAD = os.environ.get("MOLPROP_" + "SAFE_LOAD", "0") == "1"
_read_checkpoint = functools.partial(torch.serialization.load, map_location="cpu", weights_only=_SAFE_LOAD)  # ruleid: MLS101


def load_pretrained_encoder(model: MolPropModel, source: str, cache_dir: str = "~/.cache/molprop") -> Dict[str, int]:
    """Initialise the encoder from a checkpoint path or URL (e.g. a self-supervised run)."""
    if source.startswith(("http://", "https://")):
        local = Path(cache_dir).expanduser() / Path(urlparse(source).path).name
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(source, str(local), progress=False)
    else:
        local = Path(source)
    blob = _read_checkpoint(local)  # ruleid: MLS101
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    prefix = next((p for p in ("model.encoder.", "encoder.") if any(k.startswith(p) for k in state)), "")
    enc = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = model.encoder.load_state_dict(enc, strict=False)
    log.info("pretrained encoder from %s: %d tensors, %d missing, %d unexpected",
             source, len(enc), len(missing), len(unexpected))
    return {"loaded": len(enc) - len(unexpected), "missing": len(missing)}
