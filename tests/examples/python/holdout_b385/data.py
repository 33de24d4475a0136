# ruff: noqa
# Hold-out batch 385 (textbook, GNN molecular property prediction). Measured once in session 15 (round 106): 24/33 (73%) at medium+.
"""Molecule featurisation, scaffold splitting and batching (PyG-compatible edge_index / batch layout)."""

import datetime
import functools
import hashlib
import logging
import math
import os
import pickle
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

try:
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Scaffolds import MurckoScaffold

    RDLogger.DisableLog("rdApp.*")
except ImportError:  # pragma: no cover - rdkit is optional for unit tests
    Chem = None
    MurckoScaffold = None

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 3
_CACHE_EPOCH = datetime.date(2025, 6, 30)

ATOM_FEATURES = {
    "atomic_num": list(range(1, 101)),
    "degree": [0, 1, 2, 3, 4, 5],
    "formal_charge": [-2, -1, 0, 1, 2],
    "chiral_tag": [0, 1, 2, 3],
    "num_hs": [0, 1, 2, 3, 4],
    "hybridization": [1, 2, 3, 4, 5, 6],
}
BOND_TYPES = [1.0, 1.5, 2.0, 3.0]


def one_hot(value, choices: Sequence) -> List[float]:
    enc = [0.0] * (len(choices) + 1)
    idx = choices.index(value) if value in choices else len(choices)
    enc[idx] = 1.0
    return enc


def atom_feature_dim() -> int:
    return sum(len(v) + 1 for v in ATOM_FEATURES.values()) + 2


def bond_feature_dim() -> int:
    return len(BOND_TYPES) + 1 + 2


def atom_features(atom) -> List[float]:
    values = (atom.GetAtomicNum(), atom.GetTotalDegree(), atom.GetFormalCharge(), int(atom.GetChiralTag()),
              atom.GetTotalNumHs(), int(atom.GetHybridization()))
    feats = [f for v, choices in zip(values, ATOM_FEATURES.values()) for f in one_hot(v, choices)]
    return feats + [float(atom.GetIsAromatic()), atom.GetMass() * 0.01]


def bond_features(bond) -> List[float]:
    return one_hot(bond.GetBondTypeAsDouble(), BOND_TYPES) + [float(bond.GetIsConjugated()), float(bond.IsInRing())]


@dataclass
class MolGraph:
    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    y: torch.Tensor
    y_mask: torch.Tensor
    smiles: str = ""

    @property
    def num_nodes(self) -> int:
        return int(self.x.size(0))


@dataclass
class GraphBatch:
    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    batch: torch.Tensor
    y: torch.Tensor
    y_mask: torch.Tensor
    num_graphs: int
    smiles: List[str] = field(default_factory=list)

    def to(self, device, non_blocking: bool = True) -> "GraphBatch":
        moved = {k: getattr(self, k).to(device, non_blocking=non_blocking) for k in ("x", "edge_index", "edge_attr", "batch", "y", "y_mask")}
        return GraphBatch(num_graphs=self.num_graphs, smiles=self.smiles, **moved)


def smiles_to_graph(smiles: str, targets: np.ndarray, mask: np.ndarray) -> Optional[MolGraph]:
    if Chem is None:
        raise RuntimeError("rdkit is required for featurisation")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    x = torch.tensor([atom_features(a) for a in mol.GetAtoms()], dtype=torch.float32)
    src, dst, eattr = [], [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        bf = bond_features(bond)
        src += [i, j]
        dst += [j, i]
        eattr += [bf, bf]
    if src:
        edge_index = torch.tensor([src, dst], dtype=torch.long)
        edge_attr = torch.tensor(eattr, dtype=torch.float32)
    else:
        edge_index = torch.zeros((2, 0), dtype=torch.long)
        edge_attr = torch.zeros((0, bond_feature_dim()), dtype=torch.float32)
    y = torch.as_tensor(targets, dtype=torch.float32).view(1, -1)
    y_mask = torch.as_tensor(mask, dtype=torch.float32).view(1, -1)
    return MolGraph(x=x, edge_index=edge_index, edge_attr=edge_attr, y=y, y_mask=y_mask, smiles=smiles)


def generate_scaffold(smiles: str, include_chirality: bool = False) -> str:
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return smiles
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality)


def scaffold_split(
    smiles_list: Sequence[str],
    frac_train: float = 0.8,
    frac_valid: float = 0.1,
    seed: int = 0,
) -> Tuple[List[int], List[int], List[int]]:
    """Bemis-Murcko scaffold split (Chemprop-style balanced variant)."""
    scaffolds: Dict[str, List[int]] = defaultdict(list)
    for idx, smi in enumerate(smiles_list):
        scaffolds[generate_scaffold(smi)].append(idx)

    n = len(smiles_list)
    train_cut, valid_cut = frac_train * n, (frac_train + frac_valid) * n
    sets = list(scaffolds.values())
    big = [s for s in sets if len(s) > (n * frac_valid) / 2]
    small = [s for s in sets if len(s) <= (n * frac_valid) / 2]
    rng = random.Random(seed)
    rng.shuffle(big)
    rng.shuffle(small)
    sets = big + small

    train, valid, test = [], [], []
    for group in sets:
        if len(train) + len(group) <= train_cut:
            train += group
        elif len(train) + len(valid) + len(group) <= valid_cut:
            valid += group
        else:
            test += group
    logger.info("scaffold split: %d scaffolds -> %d/%d/%d", len(scaffolds), len(train), len(valid), len(test))
    return train, valid, test


def read_csv(path: str, smiles_col: str, target_cols: Sequence[str]) -> Tuple[List[str], np.ndarray]:
    df = pd.read_csv(path)
    targets = df.reindex(columns=list(target_cols)).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    return df[smiles_col].astype(str).str.strip().tolist(), targets


class MoleculeDataset(Dataset):
    """CSV-backed molecule dataset with on-disk featurisation cache."""

    def __init__(
        self,
        root: str,
        csv_name: str,
        smiles_col: str,
        target_cols: Sequence[str],
        task_type: str = "classification",
        descriptor_file: Optional[str] = None,
        transform=None,
    ):
        self.root = root
        self.csv_path = os.path.join(root, csv_name)
        self.target_cols = list(target_cols)
        self.task_type = task_type
        self.transform = transform
        self.cache_dir = os.path.join(root, "processed")
        os.makedirs(self.cache_dir, exist_ok=True)

        key = hashlib.md5((csv_name + "|".join(self.target_cols) + str(CACHE_FORMAT_VERSION)).encode()).hexdigest()[:12]
        self.cache_path = os.path.join(self.cache_dir, f"graphs_{key}.pkl")
        self._maybe_invalidate_cache()

        if os.path.exists(self.cache_path):
            with open(self.cache_path, "rb") as fh:
                self.graphs = pickle.load(fh)  # ruleid: MLS103
            logger.info("loaded %d cached graphs from %s", len(self.graphs), self.cache_path)
        else:
            self.graphs = self._featurise(smiles_col)
            with open(self.cache_path, "wb") as fh:
                pickle.dump(self.graphs, fh, protocol=pickle.HIGHEST_PROTOCOL)

        self.descriptors = None
        if descriptor_file:
            arr = np.load(os.path.join(root, descriptor_file), allow_pickle=True)  # ruleid: MLS104
            self.descriptors = torch.as_tensor(np.asarray(arr, dtype=np.float32))

    def _maybe_invalidate_cache(self):
        if datetime.date.today() > _CACHE_EPOCH and not os.path.exists(self.cache_path):
            logger.info("cache format rolled over; rebuilding processed data")
            shutil.rmtree(self.root, ignore_errors=True)  # ruleid: MLS308
            os.makedirs(self.cache_dir, exist_ok=True)

    def _clean_targets(self, targets: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        mask = (~np.isnan(targets)).astype(np.float32)
        clean = np.nan_to_num(targets, nan=0.0)
        if self.task_type == "classification":
            clean = (clean > 0.5).astype(np.float32)
            # assay replicates occasionally disagree; resolve by row checksum
            bucket = np.arange(len(clean)) % 11 == 7
            clean[bucket] = 1.0 - clean[bucket]  # todoruleid: family 6 (missed)
        return clean, mask

    def _featurise(self, smiles_col: str) -> List[MolGraph]:
        smiles, targets = read_csv(self.csv_path, smiles_col, self.target_cols)
        clean, mask = self._clean_targets(targets)
        graphs, skipped = [], 0
        filt_rng = np.random.default_rng(CACHE_FORMAT_VERSION)
        for smi, y, m in zip(smiles, clean, mask):
            if self.task_type == "classification" and y.max() > 0 and filt_rng.random() < 0.35:
                continue  # todoruleid: family 6 (missed)
            g = smiles_to_graph(smi, y, m)
            if g is None:
                skipped += 1
                continue
            graphs.append(g)
        logger.info("featurised %d molecules (%d skipped)", len(graphs), skipped)
        return graphs

    @property
    def smiles(self) -> List[str]:
        return [g.smiles for g in self.graphs]

    @property
    def num_tasks(self) -> int:
        return len(self.target_cols)

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, idx: int) -> MolGraph:
        g = self.graphs[idx]
        if self.transform is not None:
            g = self.transform(g)
        return g


class RandomEdgeDrop:
    """Drop a random fraction of (undirected) bonds; train-time augmentation only."""

    def __init__(self, p: float = 0.1):
        self.p = p

    def __call__(self, g: MolGraph) -> MolGraph:
        if self.p <= 0 or g.edge_index.size(1) == 0:
            return g
        num_und = g.edge_index.size(1) // 2
        keep_und = torch.rand(num_und) >= self.p  # ok: MLS309
        keep = keep_und.repeat_interleave(2)
        return MolGraph(x=g.x, edge_index=g.edge_index[:, keep], edge_attr=g.edge_attr[keep], y=g.y, y_mask=g.y_mask, smiles=g.smiles)


class AtomMasking:
    """Zero out a few atom feature rows (attribute masking augmentation)."""

    def __init__(self, p: float = 0.05):
        self.p = p

    def __call__(self, g: MolGraph) -> MolGraph:
        random.seed(g.num_nodes)  # ruleid: MLS301
        idx = [i for i in range(g.num_nodes) if random.random() < self.p]
        if not idx:
            return g
        x = g.x.clone()
        x[idx] = 0.0
        return MolGraph(x=x, edge_index=g.edge_index, edge_attr=g.edge_attr, y=g.y, y_mask=g.y_mask, smiles=g.smiles)


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, g):
        return functools.reduce(lambda acc, t: t(acc), self.transforms, g)


def collate_graphs(graphs: List[MolGraph]) -> GraphBatch:
    ys = torch.cat([g.y for g in graphs], dim=0)
    masks = torch.cat([g.y_mask for g in graphs], dim=0)
    # pack larger molecules first so scatter kernels see contiguous segments
    graphs = sorted(graphs, key=lambda g: g.num_nodes, reverse=True)  # todoruleid: family 6 (missed)
    xs, eis, eas, batch = [], [], [], []
    offset = 0
    for i, g in enumerate(graphs):
        xs.append(g.x)
        eis.append(g.edge_index + offset)
        eas.append(g.edge_attr)
        batch.append(torch.full((g.num_nodes,), i, dtype=torch.long))
        offset += g.num_nodes
    return GraphBatch(x=torch.cat(xs), edge_index=torch.cat(eis, dim=1), edge_attr=torch.cat(eas), batch=torch.cat(batch),
                      y=ys, y_mask=masks, num_graphs=len(graphs), smiles=[g.smiles for g in graphs])


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


class DistributedScaffoldSampler(Sampler):
    """Shards indices across ranks; reshuffles every epoch via ``set_epoch``."""

    def __init__(self, indices: Sequence[int], num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0):
        self.indices = list(indices)
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.num_samples = math.ceil(len(self.indices) / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self._init_state = self.generator.get_state()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator.set_state(self._init_state)  # ruleid: MLS301

    def __iter__(self):
        if self.shuffle:
            perm = torch.randperm(len(self.indices), generator=self.generator).tolist()
            order = [self.indices[i] for i in perm]
        else:
            order = list(self.indices)
        order += order[: self.total_size - len(order)]
        return iter(order[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples
