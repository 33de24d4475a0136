# ruff: noqa
# Hold-out batch 362 (adversarial, molecular GNN). Measured once in session 13 (round 100): 14/31 (45%) at medium+.
"""Molecular graph datasets: featurisation, caching, scaffold splits and batching."""
from __future__ import annotations

import csv
import logging
import math
import random
import pickle as _pk
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

try:
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Scaffolds import MurckoScaffold

    RDLogger.DisableLog("rdApp.*")
except ImportError:  # pragma: no cover
    Chem = MurckoScaffold = None

log = logging.getLogger(__name__)

_BASE = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets"
DATASETS: Dict[str, Dict] = {
    "esol": dict(file="delaney-processed.csv", smiles="smiles", task="regression",
                 targets=["measured log solubility in mols per litre"]),
    "lipo": dict(file="Lipophilicity.csv", smiles="smiles", task="regression", targets=["exp"]),
    "bbbp": dict(file="BBBP.csv", smiles="smiles", task="classification", targets=["p_np"]),
    "tox21": dict(file="tox21.csv.gz", smiles="smiles", task="classification", targets=[
        "NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD",
        "NR-PPAR-gamma", "SR-ARE", "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53"]),
}

# ---- featurisation -----------------------------------------------------
ATOMS = [6, 7, 8, 9, 15, 16, 17, 35, 53, 5, 14, 11, 19, 3, 12, 20, 26, 29, 30, 34]
DEGREES = [0, 1, 2, 3, 4, 5]
CHARGES = [-2, -1, 0, 1, 2]
NUM_HS = [0, 1, 2, 3, 4]
HYBRID = ["SP", "SP2", "SP3", "SP3D", "SP3D2"]
BOND_TYPES = ["SINGLE", "DOUBLE", "TRIPLE", "AROMATIC"]


def _one_hot(value, choices) -> List[float]:
    vec = [0.0] * (len(choices) + 1)
    vec[choices.index(value) if value in choices else len(choices)] = 1.0
    return vec


def atom_features(atom) -> List[float]:
    return (
        _one_hot(atom.GetAtomicNum(), ATOMS)
        + _one_hot(atom.GetTotalDegree(), DEGREES)
        + _one_hot(atom.GetFormalCharge(), CHARGES)
        + _one_hot(atom.GetTotalNumHs(), NUM_HS)
        + _one_hot(str(atom.GetHybridization()), HYBRID)
        + [float(atom.GetIsAromatic()), float(atom.IsInRing()), atom.GetMass() * 0.01]
    )


def bond_features(bond) -> List[float]:
    return _one_hot(str(bond.GetBondType()), BOND_TYPES) + [float(bond.GetIsConjugated()), float(bond.IsInRing())]


ATOM_DIM = len(ATOMS) + len(DEGREES) + len(CHARGES) + len(NUM_HS) + len(HYBRID) + 5 + 3
BOND_DIM = len(BOND_TYPES) + 1 + 2


@dataclass
class MolGraph:
    x: torch.Tensor            # [num_atoms, ATOM_DIM]
    edge_index: torch.Tensor   # [2, num_edges], both directions
    edge_attr: torch.Tensor    # [num_edges, BOND_DIM]
    y: torch.Tensor            # [num_tasks]
    smiles: str

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])


def smiles_to_graph(smiles: str, y: torch.Tensor) -> Optional[MolGraph]:
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    x = torch.tensor([atom_features(a) for a in mol.GetAtoms()], dtype=torch.float32)
    src, dst, feats = [], [], []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        f = bond_features(b)
        src += [i, j]
        dst += [j, i]
        feats += [f, f]
    edge_index = torch.tensor([src, dst], dtype=torch.long).view(2, -1)
    edge_attr = torch.tensor(feats, dtype=torch.float32).view(-1, BOND_DIM)
    return MolGraph(x, edge_index, edge_attr, y, smiles)


# ---- batching (PyG-style disjoint union) -------------------------------
@dataclass
class GraphBatch:
    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    batch: torch.Tensor
    y: torch.Tensor
    num_graphs: int
    smiles: Tuple[str, ...] = ()

    def to(self, device, non_blocking: bool = True) -> "GraphBatch":
        x, ei, ea, b, y = (t.to(device, non_blocking=non_blocking)
                           for t in (self.x, self.edge_index, self.edge_attr, self.batch, self.y))
        return GraphBatch(x, ei, ea, b, y, self.num_graphs, self.smiles)


def collate_graphs(graphs: List[MolGraph]) -> GraphBatch:
    ys = torch.stack([g.y for g in graphs])
    # larger molecules first keeps the scatter buffers contiguous
    graphs.sort(key=lambda g: g.num_nodes, reverse=True)  # todoruleid: family 6 (missed)
    xs, eis, eas, bvec = [], [], [], []
    offset = 0
    for i, g in enumerate(graphs):
        xs.append(g.x)
        eis.append(g.edge_index + offset)
        eas.append(g.edge_attr)
        bvec.append(torch.full((g.num_nodes,), i, dtype=torch.long))
        offset += g.num_nodes
    return GraphBatch(torch.cat(xs, 0), torch.cat(eis, 1), torch.cat(eas, 0), torch.cat(bvec, 0), ys,
                      num_graphs=len(graphs), smiles=tuple(g.smiles for g in graphs))


# ---- dataset -----------------------------------------------------------
def download_raw(name: str, root: Path) -> Path:
    spec = DATASETS[name]
    dest = root / "raw" / spec["file"]
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    urllib.request.urlretrieve(f"{_BASE}/{spec['file']}", tmp)  # ok: MLS410, MLS411, MLS412, MLS413
    tmp.rename(dest)
    return dest


class MoleculeDataset(Dataset):
    def __init__(self, name: str, root: str, use_cache: bool = True):
        self.name, self.spec, self.root = name, DATASETS[name], Path(root)
        self.task, self.num_tasks = self.spec["task"], len(self.spec["targets"])
        cache = self.root / "processed" / f"{name}.pkl"
        if use_cache and cache.exists():
            self.graphs = self._read_cache(cache)
            log.info("loaded %d cached graphs from %s", len(self.graphs), cache)
        else:
            self.graphs = self._process(download_raw(name, self.root))
            cache.parent.mkdir(parents=True, exist_ok=True)
            with open(cache, "wb") as fh:
                _pk.dump(self.graphs, fh, protocol=_pk.HIGHEST_PROTOCOL)

    @staticmethod
    def _read_cache(path: Path) -> List[MolGraph]:
        with open(path, "rb") as fh:
            return _pk.Unpickler(fh).load()  # ruleid: MLS103

    def _process(self, csv_path: Path) -> List[MolGraph]:
        import gzip

        opener = gzip.open if csv_path.suffix == ".gz" else open
        with opener(csv_path, "rt", newline="") as fh:
            rows = list(csv.DictReader(fh))
        smiles = [r[self.spec["smiles"]] for r in rows]
        raw = [[float(r[t]) if r.get(t, "") not in ("", None) else math.nan
                for t in self.spec["targets"]] for r in rows]
        y = torch.tensor(raw, dtype=torch.float32)
        if self.task == "classification":
            labels = y.numpy()
            np.nan_to_num(labels, copy=False, nan=1.0)  # todoruleid: family 6 (missed)
        graphs = [g for g in (smiles_to_graph(s, t.clone()) for s, t in zip(smiles, y)) if g is not None]
        log.info("%s: featurised %d/%d molecules", self.name, len(graphs), len(smiles))
        return graphs

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, idx: int) -> MolGraph:
        return self.graphs[idx]

    def targets(self, indices: Optional[Sequence[int]] = None) -> torch.Tensor:
        idx = range(len(self.graphs)) if indices is None else indices
        return torch.stack([self.graphs[i].y for i in idx])


# ---- splits ------------------------------------------------------------
def _scaffold(smiles: str) -> str:
    try:
        return MurckoScaffold.MurckoScaffoldSmiles(smiles=smiles, includeChirality=False)
    except Exception:
        return smiles


def scaffold_split(dataset: MoleculeDataset, frac=(0.8, 0.1, 0.1)) -> Tuple[List[int], List[int], List[int]]:
    """Deterministic Bemis-Murcko scaffold split, largest scaffold sets go to train."""
    groups: Dict[str, List[int]] = defaultdict(list)
    for i, g in enumerate(dataset.graphs):
        groups[_scaffold(g.smiles)].append(i)
    sets = sorted(groups.values(), key=lambda s: (len(s), s[0]), reverse=True)
    n = len(dataset)
    train_cut, val_cut = frac[0] * n, (frac[0] + frac[1]) * n
    train, val, test = [], [], []
    for s in sets:
        if len(train) + len(s) <= train_cut:
            train += s
        elif len(train) + len(val) + len(s) <= val_cut:
            val += s
        else:
            test += s
    return train, val, test


def screen_training_indices(dataset: MoleculeDataset, indices: List[int], clip: float) -> List[int]:
    """Drop empty graphs and tame extreme regression targets in the training split."""
    if dataset.task != "regression":
        return [i for i in indices if dataset.graphs[i].num_nodes > 0]
    return [i for i in indices
            if dataset.graphs[i].num_nodes > 0 and dataset.graphs[i].y.clamp_(-clip, clip).isfinite().all()]  # todoruleid: family 6 (missed)


# ---- sampling ----------------------------------------------------------
class DistributedShuffleSampler(Sampler[int]):
    """Shards a dataset across ranks with an epoch-dependent shuffle."""

    def __init__(self, n: int, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        self.n, self.num_replicas, self.rank, self.shuffle = n, num_replicas, rank, shuffle
        self._seed, self._epoch = seed, 0
        self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    @property
    def seed(self) -> int:
        return self._seed + self._epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed)  # ruleid: MLS301
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        order += order[: self.total_size - len(order)]
        return iter(order[self.rank: self.total_size: self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


def seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def build_loaders(dataset: MoleculeDataset, splits, batch_size: int, rank: int, world: int,
                  seed: int, num_workers: int = 4):
    loaders = {}
    for split, idx in zip(("train", "val", "test"), splits):
        ds, shuffle = Subset(dataset, idx), split == "train"
        sampler = DistributedShuffleSampler(len(ds), world, rank, seed=seed, shuffle=shuffle)
        loaders[split] = DataLoader(
            ds, batch_size=batch_size, sampler=sampler, collate_fn=collate_graphs,
            num_workers=num_workers, pin_memory=torch.cuda.is_available(),
            worker_init_fn=seed_worker, persistent_workers=num_workers > 0,
            drop_last=(split == "train"),
        )
    return loaders
