# ruff: noqa
# Hold-out batch 365 (textbook, two-tower retrieval with DDP). Measured once in session 14 (round 101): 18/33 (55%) at medium+.
"""Two-tower retrieval model: user tower (user id + GRU over clicks) and item tower (item id +
dense side features), scaled-cosine scores, in-batch sampled softmax with logQ correction
(Yi et al., RecSys 2019).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple
from urllib.parse import urlparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from data import OOV_IDX, PAD_IDX

logger = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    num_users: int
    num_items: int
    item_dense_dim: int = 0
    emb_dim: int = 64
    hidden: Sequence[int] = field(default_factory=lambda: (256, 128))
    out_dim: int = 64
    dropout: float = 0.1
    init_temperature: float = 0.05
    learn_temperature: bool = True
    max_logit_scale: float = 100.0
    share_item_embeddings: bool = True


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, dropout: float) -> nn.Sequential:
    layers = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(dropout)]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def _unit_norm_hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    # keep item vectors on the unit sphere even if the tower body is swapped for a custom one
    return F.normalize(output.float(), dim=-1).detach()  # ruleid: MLS303


class ItemTower(nn.Module):
    def __init__(self, cfg: ModelConfig, item_dense: Optional[torch.Tensor] = None):
        super().__init__()
        self.id_emb = nn.Embedding(cfg.num_items, cfg.emb_dim, padding_idx=PAD_IDX)
        dense_dim = 0 if item_dense is None else item_dense.shape[1]
        if dense_dim > 0:
            self.register_buffer("dense", item_dense.float(), persistent=False)
            self.dense_proj = nn.Sequential(nn.Linear(dense_dim, cfg.emb_dim), nn.GELU())
        else:
            self.dense = None
            self.dense_proj = None
        in_dim = cfg.emb_dim * (2 if dense_dim > 0 else 1)
        self.mlp = mlp(in_dim, cfg.hidden, cfg.out_dim, cfg.dropout)

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        x = self.id_emb(item_ids)
        if self.dense_proj is not None:
            x = torch.cat([x, self.dense_proj(self.dense[item_ids])], dim=-1)
        return F.normalize(self.mlp(x), dim=-1)


class UserTower(nn.Module):
    def __init__(self, cfg: ModelConfig, shared_item_emb: Optional[nn.Embedding] = None):
        super().__init__()
        self.user_emb = nn.Embedding(cfg.num_users, cfg.emb_dim, padding_idx=PAD_IDX)
        if shared_item_emb is not None:
            self.hist_emb = shared_item_emb
        else:
            self.hist_emb = nn.Embedding(cfg.num_items, cfg.emb_dim, padding_idx=PAD_IDX)
        self.gru = nn.GRU(cfg.emb_dim, cfg.emb_dim, batch_first=True)
        self.mlp = mlp(2 * cfg.emb_dim, cfg.hidden, cfg.out_dim, cfg.dropout)

    def forward(self, user_ids: torch.Tensor, hist: torch.Tensor, hist_len: torch.Tensor) -> torch.Tensor:
        h = self.hist_emb(hist)
        packed = pack_padded_sequence(h, hist_len.cpu(), batch_first=True, enforce_sorted=True)
        _, last = self.gru(packed)
        x = torch.cat([self.user_emb(user_ids), last[-1]], dim=-1)
        return F.normalize(self.mlp(x), dim=-1)


class TwoTowerModel(nn.Module):
    def __init__(self, cfg: ModelConfig, item_dense: Optional[torch.Tensor] = None):
        super().__init__()
        self.cfg = cfg
        self.item_tower = ItemTower(cfg, item_dense)
        shared = self.item_tower.id_emb if cfg.share_item_embeddings else None
        self.user_tower = UserTower(cfg, shared)
        init_scale = math.log(1.0 / cfg.init_temperature)
        self.logit_scale = nn.Parameter(torch.tensor(init_scale), requires_grad=cfg.learn_temperature)
        self.item_tower.register_forward_hook(_unit_norm_hook)  # ruleid: MLS303
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in (self.item_tower.id_emb, self.user_tower.user_emb, self.user_tower.hist_emb):
            nn.init.normal_(emb.weight, std=self.cfg.emb_dim ** -0.5)
            with torch.no_grad():
                emb.weight[PAD_IDX].zero_()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Clamp the learnable inverse temperature as in CLIP (called after each optimizer step)."""
        self.logit_scale.clamp_(0.0, math.log(self.cfg.max_logit_scale))  # ok: MLS302, MLS303, MLS304, MLS305

    def encode_users(self, user_id, hist, hist_len) -> torch.Tensor:
        return self.user_tower(user_id, hist, hist_len)

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self.item_tower(item_ids)

    def forward(self, user_id: torch.Tensor, hist: torch.Tensor, hist_len: torch.Tensor,
                item_id: torch.Tensor, neg_item_id: Optional[torch.Tensor] = None):
        u = self.user_tower(user_id, hist, hist_len)
        if neg_item_id is not None:
            both = self.item_tower(torch.cat([item_id, neg_item_id]))
            i, n = both[: item_id.numel()], both[item_id.numel():]
        else:
            i, n = self.item_tower(item_id), None
        return u, i, n, self.logit_scale.exp()


class SampledSoftmaxLoss(nn.Module):
    """In-batch sampled softmax with logQ correction and optional uniform negatives.

    ``item_vec`` may contain items gathered from all ranks; ``label_offset`` is the position of
    this rank's positives inside that gathered block.
    """

    def __init__(self, log_q: torch.Tensor, label_smoothing: float = 0.0, remove_accidental_hits: bool = True):
        super().__init__()
        self.register_buffer("log_q", log_q.float(), persistent=False)
        self.label_smoothing = label_smoothing
        self.remove_accidental_hits = remove_accidental_hits

    def forward(self, user_vec: torch.Tensor, item_vec: torch.Tensor, user_item_ids: torch.Tensor,
                item_ids: torch.Tensor, scale: torch.Tensor, label_offset: int = 0,
                neg_vec: Optional[torch.Tensor] = None, neg_log_q: float = 0.0) -> Tuple[torch.Tensor, Dict[str, float]]:
        bsz = user_vec.shape[0]
        labels = torch.arange(bsz, device=user_vec.device) + label_offset
        logits = scale * (user_vec.float() @ item_vec.float().t())
        logits = logits - self.log_q[item_ids].unsqueeze(0)
        if self.remove_accidental_hits:
            dup = user_item_ids.unsqueeze(1) == item_ids.unsqueeze(0)
            dup[torch.arange(bsz, device=dup.device), labels] = False
            logits = logits.masked_fill(dup, -1e4)
        if neg_vec is not None:
            neg_logits = scale * (user_vec.float() @ neg_vec.float().t()) - neg_log_q
            logits = torch.cat([logits, neg_logits], dim=1)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == labels).float().mean().item()
        return loss, {"in_batch_acc": acc, "num_candidates": float(logits.shape[1])}


def load_pretrained_item_embeddings(model: TwoTowerModel, path_or_url: str, cache_dir: str) -> int:
    """Initialise item-id embeddings from e.g. a word2vec-style item2vec run. Returns rows copied."""
    if path_or_url.startswith(("http://", "https://")):
        os.makedirs(cache_dir, exist_ok=True)
        local = os.path.join(cache_dir, os.path.basename(urlparse(path_or_url).path) or "item_emb.pt")
        if not os.path.exists(local):
            logger.info("downloading pretrained item embeddings from %s", path_or_url)
            torch.hub.download_url_to_file(path_or_url, local, progress=False)
        path_or_url = local
    blob = torch.load(path_or_url, map_location="cpu")  # ruleid: MLS102
    weight = blob["item_emb"] if isinstance(blob, dict) else blob
    emb = model.item_tower.id_emb
    if weight.shape[1] != emb.embedding_dim:
        raise ValueError(f"pretrained dim {weight.shape[1]} != model dim {emb.embedding_dim}")
    n = min(weight.shape[0], emb.num_embeddings)
    with torch.no_grad():
        emb.weight[OOV_IDX + 1: n].copy_(weight[OOV_IDX + 1: n])  # ok: MLS302, MLS303, MLS304, MLS305
    logger.info("initialised %d item embeddings from %s", n - OOV_IDX - 1, path_or_url)
    return n - OOV_IDX - 1
