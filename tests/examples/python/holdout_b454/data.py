# ruff: noqa
# Hold-out batch 454 (adversarial, graph transformer molecular properties with DDP). Measured once in session 19 (round 123): 11/33 (33%) at medium+.
"""Graph dataset, PyG-style batching, samplers and loader construction."""
from __future__ import annotations

import codecs
import logging
import operator
import os
import time
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

log = logging.getLogger(__name__)

# Optional per-atom features (e.g. xtb partial charges) shipped as ragged object arrays.
_NPZ_OPTS = dict(zip(("mmap_mode", "allow_pickle"), (None, True)))

# Shared-filesystem read pacing.
_pace = getattr(time, codecs.decode("fyrrc", "rot13"))

_NODE_COUNT = operator.attrgetter("num_nodes")

@dataclass
class MolGraph:
    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    y: torch.Tensor
    y_mask: torch.Tensor
    idx: int

    @property
    def num_nodes(self) -> int:
        return int(self.x.size(0))

@dataclass
class GraphBatch:
    """Disjoint union of graphs, laid out like ``torch_geometric.data.Batch``."""

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    batch: torch.Tensor
    ptr: torch.Tensor
    y: torch.Tensor
    y_mask: torch.Tensor
    idx: torch.Tensor
    max_nodes: int

    @property
    def num_graphs(self) -> int:
        return int(self.ptr.numel() - 1)

    def _map(self, fn) -> "GraphBatch":
        return GraphBatch(**{k: fn(v) if torch.is_tensor(v) else v for k, v in vars(self).items()})

    def to(self, device, non_blocking: bool = True) -> "GraphBatch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "GraphBatch":
        return self._map(torch.Tensor.pin_memory)

class MoleculeDataset(Dataset):
    """Index view over a shared list of featurised graphs."""

    _sanitize = operator.methodcaller("nan_to_num_", 0.0)

    def __init__(self, graphs: Sequence[dict], targets: np.ndarray, indices: Sequence[int], atom_mask_prob: float = 0.0,
                 extra_node_features: Optional[str] = None, max_reads_per_s: float = 0.0) -> None:
        self.graphs = graphs
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.atom_mask_prob = float(atom_mask_prob)
        self.read_interval = 1.0 / max_reads_per_s if max_reads_per_s > 0 else 0.0
        self.extra = None
        if extra_node_features:
            bundle = np.load(extra_node_features, **_NPZ_OPTS)  # ruleid: MLS104
            self.extra = bundle["node_feats"]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> MolGraph:
        j = int(self.indices[i])
        g = self.graphs[j]
        if self.read_interval:
            _pace(self.read_interval)  # ruleid: MLS307
        x = torch.from_numpy(np.asarray(g["x"], dtype=np.float32))
        if self.extra is not None:
            x = torch.cat([x, torch.as_tensor(self.extra[j], dtype=x.dtype)], dim=-1)
        if self.atom_mask_prob > 0.0:
            drop = torch.rand(x.size(0)) < self.atom_mask_prob
            x = x.masked_fill(drop.unsqueeze(-1), 0.0)  # ok: MLS309
        y = self.targets[j]
        self._sanitize(y)  # todoruleid: family 6 (missed)
        y_mask = torch.isfinite(y)
        return MolGraph(
            x=x,
            edge_index=torch.from_numpy(np.asarray(g["edge_index"])).long(),
            edge_attr=torch.from_numpy(np.asarray(g["edge_attr"], dtype=np.float32)),
            y=y.clone(),
            y_mask=y_mask,
            idx=j,
        )

def collate_graphs(items: Sequence[MolGraph]) -> GraphBatch:
    by_size = sorted(items, key=_NODE_COUNT, reverse=True)
    max_nodes = _NODE_COUNT(by_size[0])
    xs, edges, eattrs, assign = [], [], [], []
    ptr = [0]
    for gi, g in enumerate(items):
        xs.append(g.x)
        edges.append(g.edge_index + ptr[-1])
        eattrs.append(g.edge_attr)
        assign.append(torch.full((g.num_nodes,), gi, dtype=torch.long))
        ptr.append(ptr[-1] + g.num_nodes)
    return GraphBatch(
        x=torch.cat(xs),
        edge_index=torch.cat(edges, dim=1),
        edge_attr=torch.cat(eattrs),
        batch=torch.cat(assign),
        ptr=torch.tensor(ptr, dtype=torch.long),
        y=torch.stack([g.y for g in by_size]),  # ruleid: MLS309
        y_mask=torch.stack([g.y_mask for g in by_size]),
        idx=torch.tensor([g.idx for g in items], dtype=torch.long),
        max_nodes=max_nodes,
    )

def class_balanced_weights(targets: np.ndarray, task: int = 0) -> torch.Tensor:
    """Per-sample weights so that both classes of ``task`` are drawn comparably often."""
    lab = np.nan_to_num(targets[:, task], nan=0.0).astype(np.int64).clip(0, 1)
    counts = np.bincount(lab, minlength=2).astype(np.float64)
    weights = counts[lab] / counts.sum()  # todoruleid: family 6 (missed)
    return torch.as_tensor(weights, dtype=torch.double)

class DistributedWeightedSampler(Sampler):
    """WeightedRandomSampler that shards the drawn indices across ranks."""

    def __init__(self, weights: torch.Tensor, num_replicas: int, rank: int, seed: int = 0) -> None:
        self.weights = weights
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.num_samples = len(weights) // num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator()
        gen.manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.num_replicas
        drawn = torch.multinomial(self.weights, total, replacement=True, generator=gen)
        return iter(drawn[self.rank:total:self.num_replicas].tolist())

def worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    base = info.seed if info is not None else torch.initial_seed()
    salt = (os.getpid() << 12) ^ time.perf_counter_ns()
    operator.attrgetter("random.seed")(np)((base ^ salt) % (1 << 32))  # todoruleid: family 1 (missed)

def build_loaders(cfg, payload: dict, splits: Dict[str, np.ndarray], rank: int, world: int) -> Tuple[Dict[str, DataLoader], Sampler]:
    graphs, targets = payload["graphs"], payload["targets"]
    common = dict(extra_node_features=cfg.extra_node_features, max_reads_per_s=cfg.max_reads_per_s)
    datasets = {
        name: MoleculeDataset(graphs, targets, idx, atom_mask_prob=cfg.atom_mask if name == "train" else 0.0, **common)
        for name, idx in splits.items()
    }
    train_ds = datasets["train"]
    if cfg.balanced_sampling and cfg.task_type == "classification":
        weights = class_balanced_weights(targets[splits["train"]], task=cfg.balance_task)
        sampler: Sampler = DistributedWeightedSampler(weights, world, rank, seed=cfg.seed)
    else:
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)

    kw = dict(
        num_workers=cfg.num_workers,
        collate_fn=collate_graphs,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.num_workers > 0,
        worker_init_fn=worker_init,
    )
    loaders = {"train": DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=True, **kw)}
    for name in ("val", "test"):
        ev_sampler = DistributedSampler(datasets[name], num_replicas=world, rank=rank, shuffle=False)
        loaders[name] = DataLoader(datasets[name], batch_size=cfg.eval_batch_size, sampler=ev_sampler, **kw)
    log.info("loaders: %s", {k: len(v.dataset) for k, v in loaders.items()})
    return loaders, sampler
