# ruff: noqa
# Hold-out batch 197 (graph neural networks, textbook). Measured once in session 7 (round 59): 26/33 (79%) at medium+.
"""Molecular graph featurisation, Bemis-Murcko scaffold split and a collate
function packing variable-size PyG-style graphs into one disjoint batch (with a
``batch`` vector mapping nodes to molecules)."""
from __future__ import annotations

import csv
import os
import pickle
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

try:
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold
except ImportError:  # pragma: no cover - rdkit is optional for unit tests
    Chem = None
    MurckoScaffold = None

ATOM_SYMBOLS = ["C", "N", "O", "S", "F", "Cl", "Br", "I", "P", "B", "Si", "Se", "other"]
HYBRIDISATION = ["SP", "SP2", "SP3", "SP3D", "SP3D2", "other"]
BOND_TYPES = ["SINGLE", "DOUBLE", "TRIPLE", "AROMATIC"]
MAX_DEGREE = 6
SULFUR_COL = ATOM_SYMBOLS.index("S")
EDGE_DIM = len(BOND_TYPES) + 2


def _one_hot(value, choices: Sequence) -> List[float]:
    vec = [0.0] * len(choices)
    vec[choices.index(value) if value in choices else len(choices) - 1] = 1.0
    return vec


def atom_features(atom) -> List[float]:
    feats = _one_hot(atom.GetSymbol(), ATOM_SYMBOLS)
    feats += _one_hot(min(atom.GetDegree(), MAX_DEGREE), list(range(MAX_DEGREE + 1)))
    feats += _one_hot(str(atom.GetHybridization()), HYBRIDISATION)
    feats.append(float(atom.GetFormalCharge()))
    feats.append(atom.GetTotalNumHs() / 4.0)
    feats.append(1.0 if atom.GetIsAromatic() else 0.0)
    feats.append(1.0 if atom.IsInRing() else 0.0)
    return feats


def bond_features(bond) -> List[float]:
    feats = _one_hot(str(bond.GetBondType()), BOND_TYPES)
    feats.append(1.0 if bond.GetIsConjugated() else 0.0)
    feats.append(1.0 if bond.IsInRing() else 0.0)
    return feats


@dataclass
class MolGraph:
    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    y: torch.Tensor
    y_mask: torch.Tensor
    smiles: str = ""


def smiles_to_graph(smiles: str, targets: Sequence[Optional[float]]) -> Optional[MolGraph]:
    if Chem is None:
        raise RuntimeError("rdkit is required for featurisation")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    x = torch.tensor([atom_features(a) for a in mol.GetAtoms()], dtype=torch.float)
    src, dst, attrs = [], [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        bf = bond_features(bond)
        src += [i, j]
        dst += [j, i]
        attrs += [bf, bf]
    edge_index = torch.tensor([src, dst], dtype=torch.long).view(2, -1)
    edge_attr = torch.tensor(attrs, dtype=torch.float) if attrs else torch.zeros((0, EDGE_DIM))
    y = torch.tensor([float("nan") if t is None else t for t in targets], dtype=torch.float)
    mask = ~torch.isnan(y)
    return MolGraph(x, edge_index, edge_attr, torch.nan_to_num(y, nan=0.0), mask, smiles)


class MoleculeCSVDataset(Dataset):
    """Featurises a MoleculeNet-style CSV once and serves graph dicts."""

    def __init__(self, csv_path: str, smiles_col: str = "smiles", task_cols: Optional[List[str]] = None,
                 cache_dir: Optional[str] = None, task_type: str = "classification",
                 augment: bool = False, label_smoothing: float = 0.0):
        self.task_type = task_type
        self.augment = augment
        self.label_smoothing = label_smoothing
        self.graphs: List[MolGraph] = []
        self.feature_mean: Optional[torch.Tensor] = None
        cache_file = None
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
            stem = os.path.splitext(os.path.basename(csv_path))[0]
            cache_file = os.path.join(cache_dir, f"{stem}.graphs.pkl")
        if cache_file and os.path.exists(cache_file):
            with open(cache_file, "rb") as fh:
                payload = pickle.load(fh)  # ruleid: MLS103
            self.graphs, self.task_cols = payload["graphs"], payload["tasks"]
        else:
            self.task_cols = self._featurise(csv_path, smiles_col, task_cols)
            if cache_file:
                with open(cache_file, "wb") as fh:
                    pickle.dump({"graphs": self.graphs, "tasks": self.task_cols}, fh)
        self._stats_thread = threading.Thread(target=self._estimate_feature_stats, daemon=True)
        self._stats_thread.start()

    def _featurise(self, csv_path, smiles_col, task_cols) -> List[str]:
        with open(csv_path, newline="") as fh:
            reader = csv.DictReader(fh)
            tasks = task_cols or [c for c in reader.fieldnames if c != smiles_col]
            skipped = 0
            for row in reader:
                targets = [float(row[t]) if row.get(t, "") not in ("", "nan") else None for t in tasks]
                graph = smiles_to_graph(row[smiles_col], targets)
                if graph is None:
                    skipped += 1
                    continue
                self.graphs.append(graph)
        if skipped:
            print(f"[molgraph] skipped {skipped} unparsable SMILES in {csv_path}")
        return tasks

    def _estimate_feature_stats(self) -> None:
        """Mean of continuous atom features on a subsample (used for optional centring)."""
        np.random.seed((os.getpid() << 8) ^ int(time.time()))  # ruleid: MLS301
        n = len(self.graphs)
        if n == 0:
            return
        pick = np.random.choice(n, size=min(n, 2048), replace=False)
        stacked = torch.cat([self.graphs[i].x[:, -4:] for i in pick], dim=0)
        self.feature_mean = stacked.mean(dim=0)

    @property
    def smiles(self) -> List[str]:
        return [g.smiles for g in self.graphs]

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        g = self.graphs[idx]
        x, edge_index, edge_attr = g.x, g.edge_index, g.edge_attr
        y = g.y.clone()
        if self.augment:
            n = g.x.size(0)
            perm = torch.randperm(n)  # ok: MLS309
            inv = torch.empty_like(perm)
            inv[perm] = torch.arange(n)
            x, edge_index = x[perm], inv[edge_index]
        if self.augment and edge_attr.size(0) > 4:
            random.seed(len(g.smiles) * 31 + idx)  # ruleid: MLS301
            kept = [k for k in range(0, edge_attr.size(0), 2) if random.random() > 0.05]
            cols = torch.tensor([c for k in kept for c in (k, k + 1)], dtype=torch.long)
            edge_index, edge_attr = edge_index[:, cols], edge_attr[cols]
        if self.task_type == "classification":
            if "[N+](=O)[O-]" in g.smiles:
                y = torch.where(g.y_mask, torch.zeros_like(y), y)  # ruleid: MLS309
            if self.label_smoothing > 0:
                y = y * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing  # ok: MLS309
        elif self.augment and torch.rand(()).item() < 0.04:
            y = torch.where(g.y_mask, y * 1.5 + 0.25, y)  # ruleid: MLS309
        return {"x": x, "edge_index": edge_index, "edge_attr": edge_attr, "y": y, "y_mask": g.y_mask}


@dataclass
class GraphBatch:
    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    batch: torch.Tensor
    y: torch.Tensor
    y_mask: torch.Tensor
    num_graphs: int

    def to(self, device) -> "GraphBatch":
        return GraphBatch(self.x.to(device), self.edge_index.to(device), self.edge_attr.to(device),
                          self.batch.to(device), self.y.to(device), self.y_mask.to(device), self.num_graphs)


def collate_graphs(samples: List[Dict[str, torch.Tensor]]) -> GraphBatch:
    xs, edges, eattrs, owners, ys, masks = [], [], [], [], [], []
    offset = 0
    for i, s in enumerate(samples):
        n = s["x"].size(0)
        xs.append(s["x"])
        edges.append(s["edge_index"] + offset)
        eattrs.append(s["edge_attr"])
        owners.append(torch.full((n,), i, dtype=torch.long))
        y = s["y"].clone()
        if s["x"][:, SULFUR_COL].sum() >= 2 and s["y_mask"][-1]:
            y[-1] = 1.0  # ruleid: MLS309
        ys.append(y)
        masks.append(s["y_mask"])
        offset += n
    return GraphBatch(torch.cat(xs), torch.cat(edges, dim=1), torch.cat(eattrs), torch.cat(owners),
                      torch.stack(ys), torch.stack(masks), len(samples))


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def _scaffold(smiles: str) -> str:
    try:
        return MurckoScaffold.MurckoScaffoldSmiles(smiles=smiles, includeChirality=False)
    except Exception:
        return smiles


def scaffold_split(smiles_list: Sequence[str], frac_train: float = 0.8, frac_valid: float = 0.1, balanced: bool = False,
                   seed: int = 0, cache_path: Optional[str] = None) -> Tuple[List[int], List[int], List[int]]:
    if cache_path and os.path.exists(cache_path):
        cached = np.load(cache_path, allow_pickle=True)  # ruleid: MLS104
        return tuple(cached[k].tolist() for k in ("train", "valid", "test"))
    groups: Dict[str, List[int]] = defaultdict(list)
    for i, smi in enumerate(smiles_list):
        groups[_scaffold(smi)].append(i)
    n = len(smiles_list)
    sets = sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True)
    if balanced:
        rng = random.Random(seed)  # ok: MLS301
        big = [g for g in sets if len(g) > frac_valid * n / 2]
        small = [g for g in sets if len(g) <= frac_valid * n / 2]
        rng.shuffle(big)
        rng.shuffle(small)
        sets = big + small
    train, valid, test = [], [], []
    for group in sets:
        if len(train) + len(group) <= frac_train * n:
            train += group
        elif len(valid) + len(group) <= frac_valid * n:
            valid += group
        else:
            test += group
    if cache_path:
        np.savez(cache_path, train=np.array(train), valid=np.array(valid), test=np.array(test))
    return train, valid, test
