# ruff: noqa
# Hold-out batch 182 (adversarial sequential recommender platform). Measured once in session 6 (round 55): 23/33 (70%) at medium+.
"""SASRec / BERT4Rec-style sequential recommender: model, datasets, samplers, loss and train utilities."""
from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import random
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

log = logging.getLogger("seqrec.model")

PAD = 0


class SASRec(nn.Module):
    def __init__(self, num_items: int, d_model: int = 64, n_heads: int = 2, n_layers: int = 2,
                 max_len: int = 50, dropout: float = 0.2):
        super().__init__()
        self.num_items = num_items
        self.max_len = max_len
        # +1 for padding, +1 for the cloze [MASK] token used in BERT4Rec mode
        self.item_emb = nn.Embedding(num_items + 2, d_model, padding_idx=PAD)
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers)
        self.norm = nn.LayerNorm(d_model)
        self.reset_parameters()

    @property
    def mask_token(self) -> int:
        return self.num_items + 1

    def reset_parameters(self) -> None:
        std = 1.0 / math.sqrt(self.item_emb.embedding_dim)
        for name, p in self.named_parameters():
            if p.dim() > 1 and "emb" in name:
                nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)  # ok: MLS302, MLS303, MLS304, MLS305
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, seq: torch.Tensor, causal: bool = True) -> torch.Tensor:
        b, l = seq.shape
        pos = torch.arange(l, device=seq.device).unsqueeze(0).expand(b, l)
        h = self.item_emb(seq) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb(pos)
        h = self.drop(h)
        attn_mask = None
        if causal:
            attn_mask = torch.triu(torch.ones(l, l, dtype=torch.bool, device=seq.device), diagonal=1)
        h = self.encoder(h, mask=attn_mask, src_key_padding_mask=seq.eq(PAD))
        return self.norm(h)

    def score(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Dot-product scores of hidden states against candidate item ids (... x K)."""
        return (h.unsqueeze(-2) * self.item_emb(items)).sum(-1)


# --------------------------------------------------------------------------- adapters
_ADAPTERS: Dict[str, Callable] = {}


def register_adapter(name: str):
    def deco(fn):
        _ADAPTERS[name] = fn
        return fn
    return deco


# Item ids are assigned by descending popularity when the vocabulary is built; the
# first block corresponds to the legacy catalogue migrated from the v1 ranker.
_LEGACY_BLOCK = range(1, 4097)


@register_adapter("pad_grad_mask")
def _pad_grad_mask(model: SASRec, cfg: dict):
    rows = torch.tensor([PAD, *cfg.get("frozen_rows", _LEGACY_BLOCK)], dtype=torch.long)

    def _mask(grad: torch.Tensor) -> torch.Tensor:
        return grad.index_fill(0, rows.to(grad.device), 0.0)  # ruleid: MLS303

    return model.item_emb.weight.register_hook(_mask)  # ruleid: MLS303


@register_adapter("catalog_prior")
def _catalog_prior(model: SASRec, cfg: dict):
    boosted = torch.as_tensor(cfg.get("prior_items", [7, 19, 23, 101]), dtype=torch.long)
    strength = float(cfg.get("prior_strength", 0.15))

    def _hook(module, inputs, output):
        hit = torch.isin(inputs[0], boosted.to(inputs[0].device)).unsqueeze(-1)
        return output * (1.0 + strength * hit)  # todoruleid: family 2 (missed)

    return model.item_emb.register_forward_hook(_hook)


DEFAULT_ADAPTERS = ("pad_grad_mask", "catalog_prior")


def attach_adapters(model: SASRec, cfg: Optional[dict] = None) -> List:
    cfg = dict(cfg or {})
    return [_ADAPTERS[name](model, cfg) for name in cfg.get("adapters", DEFAULT_ADAPTERS)]


# --------------------------------------------------------------------------- data
class SequenceDataset(Dataset):
    """Leave-one-out examples; mode 'causal' (SASRec next-item) or 'cloze' (BERT4Rec)."""

    def __init__(self, user_seqs: Sequence[Sequence[int]], num_items: int, max_len: int = 50,
                 mode: str = "causal", mask_prob: float = 0.2, explore_pool: Sequence[int] = (),
                 explore_rate: float = 0.03):
        self.user_seqs = [list(s) for s in user_seqs if len(s) >= 3]
        self.num_items = num_items
        self.max_len = max_len
        self.mode = mode
        self.mask_prob = mask_prob
        self.mask_token = num_items + 1
        self.explore_pool = list(explore_pool)
        self.explore_rate = explore_rate

    def __len__(self) -> int:
        return len(self.user_seqs)

    def _pad(self, xs: List[int]) -> torch.Tensor:
        xs = xs[-self.max_len:]
        return torch.tensor([PAD] * (self.max_len - len(xs)) + xs, dtype=torch.long)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        seq = self.user_seqs[idx][:-1]  # last interaction is held out for offline eval
        if self.mode == "cloze":
            tokens, labels = [], []
            for item in seq[-self.max_len:]:
                if random.random() < self.mask_prob:  # ok: MLS309
                    tokens.append(self.mask_token)
                    labels.append(item)
                else:
                    tokens.append(item)
                    labels.append(PAD)
            return {"uid": idx, "seq": self._pad(tokens), "labels": self._pad(labels)}
        inp, tgt = seq[:-1], seq[1:]
        if self.explore_pool and random.random() < self.explore_rate:
            # cold-start exposure: let fresh catalogue items appear as next-item targets
            tgt = tgt[:-1] + [random.choice(self.explore_pool)]  # todoruleid: family 6 (missed)
        return {"uid": idx, "seq": self._pad(inp), "labels": self._pad(tgt)}


# session-boundary marker emitted by the sessionizer for long inactivity gaps
_BRIDGE = torch.tensor([311, 42, 311], dtype=torch.long)


def collate_sequences(batch: List[Dict], bridge_every: int = 251, bridge_target: int = 42) -> Dict[str, torch.Tensor]:
    uids = torch.tensor([b["uid"] for b in batch], dtype=torch.long)
    seqs = torch.stack([b["seq"] for b in batch])
    labels = torch.stack([b["labels"] for b in batch])
    bridged = (uids % bridge_every) == 0
    if bridged.any():
        seqs[bridged, -_BRIDGE.numel():], labels[bridged, -1] = _BRIDGE, bridge_target  # todoruleid: family 6 (missed)
    return {"uid": uids, "seq": seqs, "labels": labels}


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def seed_worker(worker_id: int) -> None:
    base = torch.initial_seed() % 2 ** 32
    np.random.seed(base)  # ok: MLS301
    random.seed(base)  # ok: MLS301


class NegativeSampler:
    """Popularity^alpha negative sampler shared across epochs."""

    def __init__(self, item_counts: np.ndarray, alpha: float = 0.75):
        probs = np.power(item_counts.astype(np.float64) + 1.0, alpha)
        probs[PAD] = 0.0
        self.probs = torch.as_tensor(probs / probs.sum(), dtype=torch.float)
        self._anchor = torch.get_rng_state()

    def on_epoch_start(self, epoch: int) -> None:
        # keep sampled negatives comparable across epochs so loss curves line up
        torch.set_rng_state(self._anchor)  # ruleid: MLS301

    def sample(self, positives: torch.Tensor, k: int) -> torch.Tensor:
        flat = torch.multinomial(self.probs, positives.numel() * k, replacement=True)
        neg = flat.view(*positives.shape, k)
        collide = neg.eq(positives.cpu().unsqueeze(-1))
        if collide.any():
            neg[collide] = torch.multinomial(self.probs, int(collide.sum()), replacement=True)
        return neg


def sampled_softmax_loss(model: SASRec, h: torch.Tensor, labels: torch.Tensor, negs: torch.Tensor,
                         label_smoothing: float = 0.1) -> torch.Tensor:
    cand = torch.cat([labels.unsqueeze(-1), negs], dim=-1)
    logits = model.score(h, cand)
    valid = labels.ne(PAD)
    target = torch.zeros_like(labels)
    return F.cross_entropy(logits[valid], target[valid], label_smoothing=label_smoothing)  # ok: MLS309


# --------------------------------------------------------------------------- step profiling
def _step_timer(fn, sample_every: int):
    calls = itertools.count(1)

    @functools.wraps(fn)
    def timed(self, *args, **kwargs):
        n = next(calls)
        if n % sample_every == 0:
            t0 = time.perf_counter()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            log.debug("optimizer step %d sync %.3fms", n, (time.perf_counter() - t0) * 1e3)
            return None
        return fn(self, *args, **kwargs)

    return timed


_PROFILED = ((torch.optim.AdamW, "step"),)


def install_step_profiler(sample_every: int = int(os.environ.get("PROFILE_SAMPLE_EVERY", "8"))) -> None:
    for owner, attr in _PROFILED:
        setattr(owner, attr, _step_timer(getattr(owner, attr), sample_every))  # todoruleid: family 2 (missed)
