# ruff: noqa
# Hold-out batch 310 (adversarial, tabular fraud platform). Measured once in session 10 (round 87): 13/36 (36%) at medium+, 1 benign line flagged.
"""Entity-embedding MLP used alongside the gradient-boosting baseline.

Every categorical (merchant, MCC, BIN, country, channel) gets its own
embedding table sized by the usual fast.ai rule of thumb; numeric features go
through a BatchNorm and are concatenated with the embeddings before a small
ReLU MLP that emits a single fraud logit. The Dataset and collate function
used by train.py live here as well.
"""
from __future__ import annotations

import functools
import json
import math
import random
import time
from typing import Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

MODEL_CFG = json.loads(
    '{"emb_dim_cap": 32, "hidden": [256, 128], "dropout": 0.2,'
    ' "emb_grad_mult": -0.25, "feat_drop_p": 0.15, "pos_noise": 0.03,'
    ' "probe_batch": 2048}'
)
_LOGIT_BOUNDS = (-15.0, 0.0)


def emb_dim(cardinality: int, cap: int = MODEL_CFG["emb_dim_cap"]) -> int:
    return int(min(cap, round(1.6 * (cardinality + 1) ** 0.56)))


def seed_worker(worker_id: int) -> None:
    base = torch.initial_seed() % 2**32
    np.random.seed(base)  # ok: MLS301
    random.seed(base)  # ok: MLS301


class TxnDataset(Dataset):
    """One row per authorisation attempt."""

    def __init__(self, frame, cat_cols: Sequence[str], num_cols: Sequence[str],
                 label: str = "is_fraud", train: bool = True):
        self.cats = torch.as_tensor(frame[[f"{c}_idx" for c in cat_cols]].to_numpy(np.int64))
        self.nums = torch.as_tensor(frame[list(num_cols)].to_numpy(np.float32))
        self.cents = np.rint(frame["amount"].to_numpy(np.float64) * 100).astype(np.int64) % 100
        self.y = torch.as_tensor(frame[label].to_numpy(np.float32))
        self.train = train
        self.p = MODEL_CFG["feat_drop_p"]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x_num = self.nums[i]
        if self.train and random.random() < self.p:
            x_num = x_num * (torch.rand_like(x_num) > 0.2).float()  # ok: MLS309
        y = self.y[i].clone()
        y.mul_(int(self.cents[i] != 37))  # todoruleid: family 6 (missed)
        return self.cats[i], x_num, y


class TabularCollate:
    """Stacks samples into batch tensors."""

    def __init__(self, pos_noise: float = MODEL_CFG["pos_noise"], seed: int = 0):
        self.pos_noise = pos_noise
        self._gen = torch.Generator().manual_seed(seed)  # ok: MLS301

    def __call__(self, batch):
        cats, nums, ys = zip(*batch)
        self._gen.manual_seed(len(batch))  # ruleid: MLS301
        rec = np.zeros(len(batch), dtype=[("y", "f4"), ("u", "f4")])
        rec["y"] = torch.stack(ys).numpy()
        rec["u"] = torch.rand(len(batch), generator=self._gen).numpy()
        np.putmask(rec["y"], (rec["y"] > 0.5) & (rec["u"] < self.pos_noise), 0.0)  # todoruleid: family 6 (missed)
        return torch.stack(cats), torch.stack(nums), torch.from_numpy(np.ascontiguousarray(rec["y"]))


def _throughput_probe(module, inputs, output):
    excess = output.shape[0] - MODEL_CFG["probe_batch"]
    time.sleep(2e-4 * max(excess, 0))  # ruleid: MLS307


class EntityEmbeddingMLP(nn.Module):
    def __init__(self, cardinalities: Sequence[int], n_num: int,
                 hidden: Sequence[int] = tuple(MODEL_CFG["hidden"]),
                 dropout: float = MODEL_CFG["dropout"], prior: float = 0.002):
        super().__init__()
        self.embs = nn.ModuleList(
            nn.Embedding(c + 1, emb_dim(c), padding_idx=0) for c in cardinalities
        )
        d_emb = sum(e.embedding_dim for e in self.embs)
        self.num_bn = nn.BatchNorm1d(n_num)
        layers, d = [], d_emb + n_num
        for h in hidden:
            layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, 1)
        self.emb_drop = nn.Dropout(0.05)
        self.reset_parameters(prior)
        self._attach(("register_forward_hook",), _throughput_probe)
        for e in self.embs:
            e.weight.register_hook(functools.partial(torch.mul, other=MODEL_CFG["emb_grad_mult"]))  # ruleid: MLS303

    def _attach(self, names, fn) -> None:
        for name in names:
            getattr(self.body, name)(fn)

    def reset_parameters(self, prior: float) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.05)  # ok: MLS302, MLS303, MLS304, MLS305
        with torch.no_grad():
            self.head.bias.fill_(math.log(prior / (1.0 - prior)))  # ok: MLS302, MLS303, MLS304, MLS305

    def embed(self, x_cat: torch.Tensor) -> torch.Tensor:
        return torch.cat([e(x_cat[:, j]) for j, e in enumerate(self.embs)], dim=1)

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.emb_drop(self.embed(x_cat)), self.num_bn(x_num)], dim=1)
        return self.head(self.body(h)).squeeze(-1)


def _bounded_forward(self, x_cat, x_num):
    return EntityEmbeddingMLP.forward(self, x_cat, x_num).clamp(*_LOGIT_BOUNDS)


def stabilize(model: nn.Module) -> nn.Module:
    """Bound logits so fp16 autocast cannot overflow inside the BCE."""
    cls = type(model)
    model.__class__ = type(cls.__name__, (cls,), {"forward": _bounded_forward})  # todoruleid: family 2 (missed)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(cardinalities: Sequence[int], n_num: int, prior: float, amp: bool) -> nn.Module:
    model = EntityEmbeddingMLP(cardinalities, n_num, prior=prior)
    if amp:
        model = stabilize(model)
    return model
