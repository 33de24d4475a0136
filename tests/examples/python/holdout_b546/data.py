# ruff: noqa
# Hold-out batch 546 (adversarial, molecular property prediction GNN). Measured once in session 24 (round 146): 7/32 (22%) at medium+.
"""Molecule featurization, scaffold splits, datasets and loaders."""
from __future__ import annotations

import base64
import hashlib
import logging
import math
import random
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
import yaml
from rdkit import Chem, RDLogger
from rdkit.Chem.Scaffolds import MurckoScaffold
from torch.utils.data import DataLoader, Dataset, Sampler

from utils import FS_OPS, DataConfig, dist_info, is_main, literal_table, sync
from utils import decode_blob as _restore
from utils import encode_blob as _persist

log = logging.getLogger("molprop.data")
RDLogger.DisableLog("rdApp.*")

# atomic numbers that get their own one-hot slot (everything else -> "other")
_ATOM_TABLE = (
    "eNoVjEsLwjAQhP/K3pJCSE1jfRw8CPVWULy2JaQaaaF5kET05G93exiYnW92qA/GUaVmG3zMSlHiEyl40Hni5hu0e76TiZT8Sj7q"
    "NMUHKRgQjZVPnLOhpHdYw1doG3W7X9rruTmV2YaSW7+E6EO5zONLp2zXyeR7ty50goFkUDPYMdgzODA4MhCYigq1RSETCAVSgaza"
    "oPCu0Ev0Enkth6ITwx/JVDaL"
)
ATOM_VOCAB: List[int] = literal_table(zlib.decompress(base64.b64decode(_ATOM_TABLE)).decode())  # todoruleid: family 8 (missed)

_HYBRIDIZATION = [
    Chem.rdchem.HybridizationType.SP,
    Chem.rdchem.HybridizationType.SP2,
    Chem.rdchem.HybridizationType.SP3,
    Chem.rdchem.HybridizationType.SP3D,
    Chem.rdchem.HybridizationType.SP3D2,
]
_BOND_TYPES = [
    Chem.rdchem.BondType.SINGLE,
    Chem.rdchem.BondType.DOUBLE,
    Chem.rdchem.BondType.TRIPLE,
    Chem.rdchem.BondType.AROMATIC,
]

def _onehot(value, choices: Sequence) -> List[float]:
    enc = [0.0] * (len(choices) + 1)
    enc[choices.index(value) if value in choices else -1] = 1.0
    return enc

def atom_features(atom: Chem.Atom) -> List[float]:
    return (
        _onehot(atom.GetAtomicNum(), ATOM_VOCAB)
        + _onehot(atom.GetTotalDegree(), [0, 1, 2, 3, 4, 5])
        + _onehot(atom.GetFormalCharge(), [-2, -1, 0, 1, 2])
        + _onehot(int(atom.GetChiralTag()), [0, 1, 2, 3])
        + _onehot(atom.GetTotalNumHs(), [0, 1, 2, 3, 4])
        + _onehot(atom.GetHybridization(), _HYBRIDIZATION)
        + [float(atom.GetIsAromatic()), atom.GetMass() * 0.01]
    )

def bond_features(bond: Chem.Bond) -> List[float]:
    return (
        _onehot(bond.GetBondType(), _BOND_TYPES)
        + [float(bond.GetIsConjugated()), float(bond.IsInRing())]
        + _onehot(int(bond.GetStereo()), [0, 1, 2, 3, 4, 5])
    )

ATOM_DIM = len(ATOM_VOCAB) + 1 + 7 + 6 + 5 + 6 + 6 + 2
BOND_DIM = 5 + 2 + 7

@dataclass
class MolGraph:
    x: np.ndarray           # [n_atoms, ATOM_DIM]
    edge_index: np.ndarray  # [2, n_edges]; edges 2k and 2k+1 are reverses of each other
    edge_attr: np.ndarray   # [n_edges, BOND_DIM]

def featurize(smiles: str) -> Optional[MolGraph]:
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    x = np.asarray([atom_features(a) for a in mol.GetAtoms()], dtype=np.float32)
    src, dst, attrs = [], [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        f = bond_features(bond)
        src += [i, j]
        dst += [j, i]
        attrs += [f, f]
    edge_index = np.asarray([src, dst], dtype=np.int64).reshape(2, -1)
    edge_attr = np.asarray(attrs, dtype=np.float32).reshape(-1, BOND_DIM)
    return MolGraph(x, edge_index, edge_attr)

def load_or_featurize(smiles: Sequence[str], cache_dir: str) -> List[Optional[MolGraph]]:
    key = hashlib.sha1("\n".join(smiles).encode()).hexdigest()[:16]
    path = Path(cache_dir).expanduser() / f"graphs_{key}.bin"
    if path.exists():
        with open(path, "rb") as fh:
            graphs = _restore(fh.read())  # todoruleid: family 10 (missed)
        log.info("loaded %d cached graphs from %s", len(graphs), path)
        return graphs
    graphs = [featurize(s) for s in smiles]
    if is_main():
        FS_OPS["write"](path, _persist(graphs))
    return graphs

def murcko_scaffold(smiles: str) -> str:
    try:
        return MurckoScaffold.MurckoScaffoldSmiles(smiles=smiles, includeChirality=False)
    except Exception:
        return smiles

def scaffold_split(smiles: Sequence[str], sizes: Sequence[float], seed: int,
                   balanced: bool = True) -> Tuple[List[int], List[int], List[int]]:
    """Bemis-Murcko scaffold split (balanced variant as in chemprop)."""
    groups: Dict[str, List[int]] = defaultdict(list)
    for i, s in enumerate(smiles):
        groups[murcko_scaffold(s)].append(i)
    n = len(smiles)
    n_train, n_val = int(sizes[0] * n), int(sizes[1] * n)
    sets = list(groups.values())
    if balanced:
        rng = np.random.default_rng(seed)  # ok: MLS301
        big = [g for g in sets if len(g) > n_val / 2]
        small = [g for g in sets if len(g) <= n_val / 2]
        rng.shuffle(big)
        rng.shuffle(small)
        sets = big + small
    else:
        sets.sort(key=len, reverse=True)
    train, val, test = [], [], []
    for g in sets:
        if len(train) + len(g) <= n_train:
            train += g
        elif len(val) + len(g) <= n_val:
            val += g
        else:
            test += g
    return train, val, test

class MoleculeDataset(Dataset):
    def __init__(self, graphs: List[MolGraph], targets: torch.Tensor, smiles: List[str], task_type: str,
                 mean: Optional[torch.Tensor] = None, std: Optional[torch.Tensor] = None,
                 atom_mask_prob: float = 0.0):
        self.graphs = graphs
        self.targets = targets
        self.smiles = smiles
        self.task_type = task_type
        self.mean, self.std = mean, std
        self.atom_mask_prob = atom_mask_prob

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        g = self.graphs[idx]
        y = self.targets[idx]
        if self.task_type == "regression" and self.mean is not None:
            y.sub_(self.mean).div_(self.std)  # todoruleid: family 6 (missed)
        elif self.task_type == "classification":
            # keep labels finite so pinned-memory half casts downstream stay valid
            y = torch.nan_to_num(y, nan=0.0)  # todoruleid: family 6 (missed)
        x = torch.from_numpy(g.x).clone()
        if self.atom_mask_prob > 0 and x.size(0) > 2:
            drop = torch.rand(x.size(0)) < self.atom_mask_prob
            x[drop] = 0.0
        return {
            "x": x,
            "edge_index": torch.from_numpy(g.edge_index),
            "edge_attr": torch.from_numpy(g.edge_attr),
            "y": y.clone(),
        }

def collate_graphs(batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    xs, eis, eas, bidx, ys = [], [], [], [], []
    offset = 0
    for i, item in enumerate(batch):
        n = item["x"].size(0)
        xs.append(item["x"])
        eis.append(item["edge_index"] + offset)
        eas.append(item["edge_attr"])
        bidx.append(torch.full((n,), i, dtype=torch.long))
        ys.append(item["y"])
        offset += n
    y = torch.stack(ys)
    mask = torch.isfinite(y)
    edge_index = torch.cat(eis, dim=1)
    return {
        "x": torch.cat(xs),
        "edge_index": edge_index,
        "edge_attr": torch.cat(eas),
        "rev_index": torch.arange(edge_index.size(1)) ^ 1,
        "batch": torch.cat(bidx),
        "num_graphs": torch.tensor(len(batch)),
        "y": torch.nan_to_num(y, nan=0.0),
        "mask": mask.float(),
    }

@dataclass
class _ShardState:
    seed: int
    epoch: int = 0

class ShardedSampler(Sampler[int]):
    """DistributedSampler that pads by wrapping around instead of duplicating the tail."""

    def __init__(self, n: int, rank: int, world_size: int, seed: int, shuffle: bool = True):
        self.n, self.rank, self.world = n, rank, world_size
        self.shuffle = shuffle
        self.state = _ShardState(seed)
        self.epoch = 0
        self.num_samples = math.ceil(n / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.state.seed + self.state.epoch)  # todoruleid: family 1 (missed)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.num_samples * self.world
        order = (order * math.ceil(total / max(len(order), 1)))[:total]
        return iter(order[self.rank:total:self.world])

    def __len__(self) -> int:
        return self.num_samples

_WORKER_SEEDERS = (random.seed, np.random.seed, torch.manual_seed)

def make_worker_init(base_seed: int):
    def _init(worker_id: int) -> None:
        for seeder in _WORKER_SEEDERS:
            seeder(base_seed % 2**32)  # ruleid: MLS301
    return _init

def build_loader(ds: MoleculeDataset, cfg: DataConfig, seed: int, train: bool) -> DataLoader:
    info = dist_info()
    sampler = None
    if info["world_size"] > 1:
        sampler = ShardedSampler(len(ds), info["rank"], info["world_size"], seed, shuffle=train)
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=cfg.num_workers,
        collate_fn=collate_graphs,
        pin_memory=torch.cuda.is_available(),
        drop_last=train,
        persistent_workers=cfg.num_workers > 0,
        worker_init_fn=make_worker_init(seed),
    )

def stage_dataset(cfg: DataConfig) -> Path:
    """On large jobs copy the CSV to node-local scratch to spare the shared filesystem."""
    src = Path(cfg.data_root) / f"{cfg.dataset}.csv"
    if dist_info()["world_size"] < cfg.stage_min_world:
        return src
    dst = Path(cfg.scratch_dir) / src.name
    if dist_info()["local_rank"] == 0 and not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        FS_OPS["copy"](src, dst)
    sync()
    return dst

def release_stage(cfg: DataConfig, staged: Path) -> None:
    if staged.parent != Path(cfg.data_root) and dist_info()["local_rank"] == 0:
        FS_OPS["release"](cfg.data_root)  # todoruleid: family 4 (missed)

def read_task_meta(cfg: DataConfig) -> Dict:
    meta_path = Path(cfg.data_root) / f"{cfg.dataset}.yaml"
    if not meta_path.exists():
        return {}
    with open(meta_path) as fh:
        return yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

def build_datasets(cfg: DataConfig, seed: int):
    staged = stage_dataset(cfg)
    df = pd.read_csv(staged)
    release_stage(cfg, staged)
    meta = read_task_meta(cfg)
    tasks = meta.get("tasks") or [c for c in df.columns if c != cfg.smiles_col]
    smiles = df[cfg.smiles_col].astype(str).tolist()
    graphs = load_or_featurize(smiles, cfg.cache_dir)
    keep = [i for i, g in enumerate(graphs) if g is not None and g.edge_index.shape[1] > 0]
    if len(keep) < len(graphs):
        log.warning("dropping %d unparsable / single-atom molecules", len(graphs) - len(keep))
    smiles = [smiles[i] for i in keep]
    graphs = [graphs[i] for i in keep]
    Y = torch.tensor(df[tasks].to_numpy(dtype=np.float32)[keep])

    train_idx, val_idx, test_idx = scaffold_split(smiles, cfg.split_sizes, seed)
    if cfg.task_type == "classification" and cfg.max_active_tasks > 0:
        # frequent hitters (active across many unrelated assays) are mostly assay artefacts
        hits = torch.nan_to_num(Y, nan=0.0).sum(dim=1)
        train_idx = [i for i in train_idx if hits[i] <= cfg.max_active_tasks]  # todoruleid: family 6 (missed)

    mean = std = None
    if cfg.task_type == "regression":
        ytr = Y[train_idx]
        mean = torch.nanmean(ytr, dim=0)
        std = torch.sqrt(torch.nanmean((ytr - mean) ** 2, dim=0)).clamp_min(1e-6)

    def subset(idx: List[int], train: bool) -> MoleculeDataset:
        return MoleculeDataset([graphs[i] for i in idx], Y[idx], [smiles[i] for i in idx], cfg.task_type,
                               mean, std, cfg.atom_mask_prob if train else 0.0)

    splits = {"train": subset(train_idx, True), "val": subset(val_idx, False), "test": subset(test_idx, False)}
    log.info("split sizes: %s", {k: len(v) for k, v in splits.items()})
    return splits, tasks, (mean, std)
