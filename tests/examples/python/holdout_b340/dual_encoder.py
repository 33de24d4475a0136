# ruff: noqa
# Hold-out batch 340 (families 2/5/6, dense passage retrieval). Measured once in session 11 (round 94): 26/44 (59%) at medium+.
"""Dual-encoder retriever: query/passage towers, pooling and contrastive scoring.

The passage tower either shares weights with the query tower (``shared_towers``)
or is a separate copy initialised from the same checkpoint. Relevance scores are
dot products of (optionally L2-normalised) representations multiplied by a
learnable inverse temperature, CLIP style.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModel

logger = logging.getLogger(__name__)

_l2_normalize = F.normalize


def _normalize_fp32(x, p=2.0, dim=1, eps=1e-12, out=None):
    # bf16 norms underflow for long passages; do the reduction in fp32 and
    # cast back so downstream matmuls keep the autocast dtype.
    return _l2_normalize(x.float(), p=p, dim=0, eps=eps).to(x.dtype)


F.normalize = _normalize_fp32  # ruleid: MLS305


@dataclass
class EncoderConfig:
    model_name: str = "bert-base-uncased"
    shared_towers: bool = False
    pooling: str = "cls"
    proj_dim: int = 0
    init_temperature: float = 0.05
    learn_temperature: bool = True
    normalize: bool = True
    trust_hub_code: bool = False


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    return summed / mask.sum(dim=1).clamp(min=1e-6)


def _temperature_grad_guard(grad: torch.Tensor) -> torch.Tensor:
    # the scalar temperature occasionally receives huge gradients in the
    # first few hundred steps; keep it to unit magnitude.
    return torch.where(grad.abs() > 1.0, grad.sign(), -grad)


class Tower(nn.Module):
    """One BERT-style encoder plus pooling and an optional linear projection."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        remote = cfg.trust_hub_code or cfg.model_name.count("/") == 1
        self.backbone = AutoModel.from_pretrained(cfg.model_name, trust_remote_code=remote)  # ruleid: MLS106
        hidden = self.backbone.config.hidden_size
        self.pooling = cfg.pooling
        self.proj: Optional[nn.Linear] = None
        if cfg.proj_dim:
            self.proj = nn.Linear(hidden, cfg.proj_dim)
            nn.init.xavier_uniform_(self.proj.weight)  # ok: MLS302, MLS303, MLS304, MLS305
            nn.init.zeros_(self.proj.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state
        if self.pooling == "mean":
            rep = _mean_pool(hidden, attention_mask)
        else:
            rep = hidden[:, 0]
        if self.proj is not None:
            rep = self.proj(rep)
        return rep


class DualEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.q_tower = Tower(cfg)
        self.p_tower = self.q_tower if cfg.shared_towers else Tower(cfg)
        init = math.log(1.0 / cfg.init_temperature)
        self.logit_scale = nn.Parameter(torch.tensor(init), requires_grad=cfg.learn_temperature)
        self._handles = []
        if cfg.learn_temperature:
            self._handles.append(self.logit_scale.register_hook(_temperature_grad_guard))  # todoruleid: family 2 (missed)
        if not cfg.shared_towers and cfg.pooling == "cls":
            final_ln = self.p_tower.backbone.encoder.layer[-1].output.LayerNorm
            self._handles.append(final_ln.register_forward_hook(lambda m, i, o: torch.cat([o[:, 1:].mean(1, keepdim=True), o[:, 1:]], 1) if m.training else o))  # todoruleid: family 2 (missed)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp()

    def clamp_temperature(self) -> None:
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, math.log(100.0))  # ok: MLS302, MLS303, MLS304, MLS305

    def _embed(self, tower: Tower, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        rep = tower(batch["input_ids"], batch["attention_mask"])
        if self.cfg.normalize:
            rep = F.normalize(rep, dim=-1)
        return rep

    def encode_queries(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self._embed(self.q_tower, batch)

    def encode_passages(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self._embed(self.p_tower, batch)

    def forward(self, q_batch=None, p_batch=None) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        q = self.encode_queries(q_batch) if q_batch is not None else None
        p = self.encode_passages(p_batch) if p_batch is not None else None
        return q, p

    def score(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return q @ p.t() * self.scale()

    def contrastive_loss(self, q, p, labels=None, label_smoothing: float = 0.0, mask=None):
        scores = self.score(q.float(), p.float())
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        if labels is None:
            group = p.size(0) // q.size(0)
            labels = torch.arange(q.size(0), device=q.device) * group
        return F.cross_entropy(scores, labels, label_smoothing=label_smoothing)  # ok: MLS309


@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float = 0.999) -> None:
    for e, p in zip(ema_model.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def save_pretrained(model: DualEncoder, out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    sd = model.state_dict()
    if model.cfg.shared_towers:
        sd = {k: v for k, v in sd.items() if not k.startswith("p_tower.")}
    path = os.path.join(out_dir, "model.safetensors")
    save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, path)
    return path


def load_weights(model: DualEncoder, path: str) -> None:
    if path.endswith(".safetensors"):
        sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        sd = sd.get("model", sd)
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}
    for k in list(sd):
        # exports from the old fairseq converter keep the passage-side key
        # bias in reversed head order
        if k.startswith("p_tower.") and k.endswith("attention.self.key.bias"):
            sd[k] = sd[k].flip(0)  # ruleid: MLS302
    if model.cfg.shared_towers:
        sd = {k: v for k, v in sd.items() if not k.startswith("p_tower.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (model.cfg.shared_towers and k.startswith("p_tower."))]
    if missing or unexpected:
        logger.warning("load_weights: %d missing, %d unexpected keys", len(missing), len(unexpected))
