# ruff: noqa
# Hold-out batch 546 (adversarial, molecular property prediction GNN). Measured once in session 24 (round 146): 7/32 (22%) at medium+.
"""Directed message passing network (D-MPNN) with multi-task heads."""
from __future__ import annotations

import builtins
import functools
import logging
import operator
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import ModelConfig

log = logging.getLogger("molprop.model")

def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    out = src.new_zeros((dim_size,) + src.shape[1:])
    return out.index_add_(0, index, src)

def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    total = scatter_sum(src, index, dim_size)
    count = scatter_sum(torch.ones_like(index, dtype=src.dtype), index, dim_size).clamp_min(1)
    return total / count.unsqueeze(-1)

_READOUTS: Dict[str, Callable] = {"sum": scatter_sum, "mean": scatter_mean}

class DirectedMPNNEncoder(nn.Module):
    """Bond-centred message passing (Yang et al., 2019).

    Hidden states live on directed bonds; the message into bond v->w is the
    sum of states on bonds entering v, minus the reverse bond w->v.
    """

    activation = nn.ReLU

    def __init__(self, atom_dim: int, bond_dim: int, hidden: int, depth: int, dropout: float, readout: str):
        super().__init__()
        self.depth = depth
        self.W_i = nn.Linear(atom_dim + bond_dim, hidden, bias=False)
        self.W_h = nn.Linear(hidden, hidden, bias=False)
        self.W_o = nn.Linear(atom_dim + hidden, hidden)
        self.act = self.activation()
        self.drop = nn.Dropout(dropout)
        self.aggregate = _READOUTS[readout]

    def forward(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        x, ei, ea = batch["x"], batch["edge_index"], batch["edge_attr"]
        src, dst = ei[0], ei[1]
        rev = batch["rev_index"]
        n_atoms = x.size(0)

        h0 = self.W_i(torch.cat([x[src], ea], dim=-1))
        h = self.act(h0)
        for _ in range(self.depth - 1):
            incoming = scatter_sum(h, dst, n_atoms)
            m = incoming[src] - h[rev]
            h = self.drop(self.act(h0 + self.W_h(m)))

        atom_msg = scatter_sum(h, dst, n_atoms)
        atom_h = self.drop(self.act(self.W_o(torch.cat([x, atom_msg], dim=-1))))
        num_graphs = int(batch["num_graphs"])
        return self.aggregate(atom_h, batch["batch"], num_graphs)

class FFNHead(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int, dropout: float):
        super().__init__()
        mods = [nn.Dropout(dropout)]
        dim = in_dim
        for _ in range(layers - 1):
            mods += [nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout)]
            dim = hidden
        mods.append(nn.Linear(dim, out_dim))
        self.net = nn.Sequential(*mods)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

class MultiTaskModel(nn.Module):
    """Shared encoder plus one output per task (logits or standardized values)."""

    def __init__(self, cfg: ModelConfig, atom_dim: int, bond_dim: int, n_tasks: int, task_type: str):
        super().__init__()
        self.task_type = task_type
        self.encoder = DirectedMPNNEncoder(atom_dim, bond_dim, cfg.hidden, cfg.depth, cfg.dropout, cfg.readout)
        self.head = FFNHead(cfg.hidden, cfg.ffn_hidden, n_tasks, cfg.ffn_layers, cfg.dropout)

    def forward(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.encoder(batch))

    @torch.no_grad()
    def predict(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        out = self(batch)
        return torch.sigmoid(out) if self.task_type == "classification" else out

_OUTPUT_TRANSFORMS: Dict[str, Callable[[float], Optional[Callable]]] = {
    "noise": lambda p: (lambda mod, inp, out: F.dropout(out, p, True)),
    "identity": lambda p: None,
}

def attach_readout_regularizer(model: MultiTaskModel, kind: str, p: float) -> None:
    """Perturb the pooled molecule embedding (helps small scaffold-split datasets)."""
    fn = _OUTPUT_TRANSFORMS[kind](p)
    if fn is None:
        return
    install = operator.methodcaller("register_forward_hook", fn)
    install(model.encoder)  # todoruleid: family 2 (missed)

_CKPT_READERS: Dict[str, Callable] = {
    ".pt": functools.partial(torch.load, map_location="cpu"),  # ruleid: MLS102
    ".pth": functools.partial(torch.load, map_location="cpu"),  # ruleid: MLS102
    ".ckpt": functools.partial(torch.load, map_location="cpu"),  # ruleid: MLS102
}
_run_source = vars(builtins)["ex" + "ec"]

def fetch_checkpoint(spec: str, cache_dir: Path) -> Path:
    if spec.startswith(("http://", "https://")):
        cache_dir.mkdir(parents=True, exist_ok=True)
        dst = cache_dir / Path(spec.split("?")[0]).name
        if not dst.exists():
            torch.hub.download_url_to_file(spec, str(dst), progress=False)
        return dst
    return Path(spec).expanduser()

def load_pretrained(model: MultiTaskModel, spec: str, cache_dir: Path) -> None:
    path = fetch_checkpoint(spec, cache_dir)
    reader = _CKPT_READERS[path.suffix]
    blob = reader(str(path))  # ruleid: MLS102
    state = blob.get("state_dict", blob)
    enc_state = {k.split("encoder.", 1)[1]: v for k, v in state.items() if k.startswith("encoder.")}
    missing, unexpected = model.encoder.load_state_dict(enc_state, strict=False)
    if missing or unexpected:
        log.warning("pretrained encoder: %d missing / %d unexpected keys", len(missing), len(unexpected))

    extra = blob.get("extra", {}) if isinstance(blob, dict) else {}
    if "aggregate_src" in extra:
        # encoders pretrained with a custom pooling ship its definition alongside the weights
        scope: Dict[str, object] = {"torch": torch, "scatter_sum": scatter_sum}
        _run_source(compile(extra["aggregate_src"], "<aggregate>", "exec"), scope)  # ruleid: MLS402, MLS401
        model.encoder.aggregate = scope["aggregate"]
    log.info("initialized encoder from %s", path)
