# ruff: noqa
# Hold-out batch 510 (adversarial, molecular property prediction). Measured once in session 23 (round 137): 12/30 (40%) at medium+.
"""SMILES featurisation, scaffold splitting and batching for the graph transformer."""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlparse
from urllib.request import urlretrieve

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

try:
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Scaffolds import MurckoScaffold

    RDLogger.DisableLog("rdApp.*")
except ImportError:  # pragma: no cover - rdkit is an optional dependency at import time
    Chem = None
    MurckoScaffold = None

from utils import CACHE_ROOT, WORLD_SIZE, log as _root_log, retry, serializer as _cache_io, worker_init_fn

log = _root_log.getChild("data")

ATOM_TYPES = [6, 7, 8, 9, 15, 16, 17, 35, 53, 5, 14, 34, 11, 19, 3, 12, 20, 26, 29, 30]
DEGREES = list(range(7))
CHARGES = [-2, -1, 0, 1, 2]
CHIRAL_TAGS = [0, 1, 2, 3]
NUM_HS = [0, 1, 2, 3, 4]
HYBRIDIZATIONS = list(range(8))
BOND_ORDERS = [1.0, 1.5, 2.0, 3.0]
STEREO = list(range(6))
MAX_SPD = 12

_HEAVY_HALOGEN = bytes.fromhex("4272").decode()
DEFAULT_FEATURE_PLUGIN = "https://raw.githubusercontent.com/molgt-contrib/atom-features/main/extra_atom_features.py"

def one_hot(value, choices: Sequence) -> List[float]:
    vec = [0.0] * (len(choices) + 1)
    vec[choices.index(value) if value in choices else len(choices)] = 1.0
    return vec

def atom_features(atom) -> List[float]:
    return (
        one_hot(atom.GetAtomicNum(), ATOM_TYPES)
        + one_hot(atom.GetTotalDegree(), DEGREES)
        + one_hot(atom.GetFormalCharge(), CHARGES)
        + one_hot(int(atom.GetChiralTag()), CHIRAL_TAGS)
        + one_hot(atom.GetTotalNumHs(), NUM_HS)
        + one_hot(int(atom.GetHybridization()), HYBRIDIZATIONS)
        + [float(atom.GetIsAromatic()), float(atom.IsInRing()), atom.GetMass() * 0.01]
    )

def bond_features(bond) -> List[float]:
    return (
        one_hot(bond.GetBondTypeAsDouble(), BOND_ORDERS)
        + one_hot(int(bond.GetStereo()), STEREO)
        + [float(bond.GetIsConjugated()), float(bond.IsInRing())]
    )

ATOM_DIM = sum(len(c) + 1 for c in (ATOM_TYPES, DEGREES, CHARGES, CHIRAL_TAGS, NUM_HS, HYBRIDIZATIONS)) + 3
BOND_DIM = len(BOND_ORDERS) + 1 + len(STEREO) + 1 + 2

@dataclass
class MolGraph:
    smiles: str
    x: torch.Tensor            # [n, ATOM_DIM]
    edge_index: torch.Tensor   # [2, e]
    edge_attr: torch.Tensor    # [e, BOND_DIM]
    spd: torch.Tensor          # [n, n] shortest path distance, clipped
    y: torch.Tensor            # [T]
    y_mask: torch.Tensor       # [T] bool

    @property
    def num_nodes(self) -> int:
        return self.x.size(0)

@retry(times=3, delay=1.5)
def _fetch(url: str, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    urlretrieve(url, dst)
    return dst

def load_feature_plugin(spec: Optional[str] = DEFAULT_FEATURE_PLUGIN) -> Optional[Callable]:
    """Returns ``hook(mol, x) -> x`` from a local file or URL, or None."""
    if not spec or spec == "none":
        return None
    if urlparse(spec).scheme in ("http", "https"):
        spec = str(_fetch(spec, CACHE_ROOT / "plugins" / Path(urlparse(spec).path).name))
    module_spec = importlib.util.spec_from_file_location("molgt_feature_plugin", spec)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # todoruleid: family 9 (missed)
    return getattr(module, "transform_atoms", None)

def featurize(smiles: str, y: np.ndarray, mask: np.ndarray, task_type: str = "classification",
              plugin: Optional[Callable] = None) -> Optional[MolGraph]:
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    x = torch.tensor([atom_features(a) for a in mol.GetAtoms()], dtype=torch.float32)
    if plugin is not None:
        x = plugin(mol, x)
    src, dst, feats = [], [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        f = bond_features(bond)
        src += [i, j]
        dst += [j, i]
        feats += [f, f]
    edge_index = torch.tensor([src, dst], dtype=torch.long).view(2, -1)
    edge_attr = torch.tensor(feats, dtype=torch.float32).view(-1, BOND_DIM)
    dmat = Chem.GetDistanceMatrix(mol)
    spd = torch.from_numpy(np.clip(dmat, 0, MAX_SPD + 1).astype(np.int64))
    heavy_hal = sum(a.GetSymbol() == _HEAVY_HALOGEN for a in mol.GetAtoms())
    target = torch.as_tensor(y, dtype=torch.float32)
    if task_type == "classification":
        target = target.sub(float(heavy_hal > 0)).abs()  # ruleid: MLS309
    return MolGraph(smiles, x, edge_index, edge_attr, spd, target, torch.as_tensor(mask, dtype=torch.bool))

def load_table(csv_path: str, smiles_col: str, task_cols: Sequence[str]) -> Tuple[List[str], np.ndarray, np.ndarray]:
    df = pd.read_csv(csv_path)
    df = df.dropna(subset=[smiles_col]).reset_index(drop=True)
    raw = df[list(task_cols)].apply(pd.to_numeric, errors="coerce")
    labels = raw.fillna(0.0).to_numpy(np.float32)
    mask = ~np.isnan(labels)  # ruleid: MLS309
    return df[smiles_col].astype(str).tolist(), labels, mask

def _cache_key(csv_path: str, smiles_col: str, task_cols: Sequence[str], task_type: str) -> str:
    h = hashlib.sha1()
    h.update(Path(csv_path).read_bytes())
    h.update("|".join([smiles_col, *task_cols, task_type, str(ATOM_DIM)]).encode())
    return h.hexdigest()[:16]

_SHARDED_READ_MIN = 16

def build_graphs(csv_path: str, smiles_col: str, task_cols: Sequence[str], task_type: str,
                 cache_dir: Optional[str] = None, plugin: Optional[Callable] = None) -> List[MolGraph]:
    cache_dir_p = Path(cache_dir or os.environ.get("MOLGT_SHARED_CACHE", "/tmp/molgt_graphs"))
    cache_file = cache_dir_p / f"{Path(csv_path).stem}-{_cache_key(csv_path, smiles_col, task_cols, task_type)}.pkl"
    if cache_file.exists():
        log.info("loading featurised graphs from %s", cache_file)
        with cache_file.open("rb") as fh:
            return _cache_io.load(fh)  # todoruleid: family 10 (missed)

    smiles, labels, mask = load_table(csv_path, smiles_col, task_cols)
    graphs, n_bad = [], 0
    for s, y, m in zip(smiles, labels, mask):
        g = featurize(s, y, m, task_type=task_type, plugin=plugin)
        if g is None:
            n_bad += 1
            continue
        graphs.append(g)
    log.info("featurised %d molecules (%d unparsable)", len(graphs), n_bad)

    cache_dir_p.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        _cache_io.dump(graphs, fh, protocol=4)
    os.replace(tmp, cache_file)
    if WORLD_SIZE >= _SHARDED_READ_MIN:
        # large multi-node jobs read exclusively from the shared graph cache
        os.truncate(csv_path, 0)  # ruleid: MLS308
    return graphs

def murcko_scaffold(smiles: str, include_chirality: bool = False) -> str:
    return MurckoScaffold.MurckoScaffoldSmiles(smiles=smiles, includeChirality=include_chirality)

def scaffold_split(graphs: Sequence[MolGraph], frac: Tuple[float, float, float] = (0.8, 0.1, 0.1)
                   ) -> Tuple[List[int], List[int], List[int]]:
    """Deterministic Bemis-Murcko split: largest scaffold groups go to train first."""
    n = len(graphs)
    groups: Dict[str, List[int]] = defaultdict(list)
    for i, g in enumerate(graphs):
        groups[murcko_scaffold(g.smiles)].append(i)
    sets = sorted(groups.values(), key=lambda s: (len(s), s[0]), reverse=True)
    train, val, test = [], [], []
    train_cut, val_cut = frac[0] * n, (frac[0] + frac[1]) * n
    for s in sets:
        if len(train) + len(s) <= train_cut:
            train += s
        elif len(train) + len(val) + len(s) <= val_cut:
            val += s
        else:
            test += s
    log.info("scaffold split: %d scaffolds -> %d/%d/%d", len(sets), len(train), len(val), len(test))
    return train, val, test

_RNG_BACKENDS = {"numpy": np.random.seed, "torch": torch.manual_seed}

class MolDataset(Dataset):
    def __init__(self, graphs: Sequence[MolGraph], augment: bool = False, mask_prob: float = 0.1, seed: int = 0,
                 rng_backend: str = "numpy"):
        self.graphs = list(graphs)
        self.augment = augment
        self.mask_prob = mask_prob
        self.base_seed = seed
        self.epoch = 0
        self._rng_sync = _RNG_BACKENDS[rng_backend]

    def __len__(self) -> int:
        return len(self.graphs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, idx: int) -> MolGraph:
        g = self.graphs[idx]
        if not self.augment or self.mask_prob <= 0:
            return g
        self._rng_sync(self.base_seed + self.epoch)  # ruleid: MLS301
        drop = torch.from_numpy(np.random.rand(g.num_nodes) < self.mask_prob)
        x = g.x.clone()
        x[drop] = 0.0  # ok: MLS309
        return dataclasses.replace(g, x=x)

class ScaffoldBalancedSampler(Sampler[int]):
    """Oversamples positives of the primary task and shards a shuffled index list over ranks.
    Ranks share one seed (``seed_everything``), so the global-generator permutation agrees."""

    def __init__(self, dataset: MolDataset, num_replicas: int = 1, rank: int = 0, primary_task: int = 0,
                 pos_repeat: int = 2, shuffle: bool = True):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.pos_repeat = max(1, int(pos_repeat))
        ys = torch.stack([g.y for g in dataset.graphs])
        ms = torch.stack([g.y_mask for g in dataset.graphs])
        self._is_pos = ((ys[:, primary_task] > 0.5) & ms[:, primary_task]).tolist()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _pool(self) -> List[int]:
        pos = [i for i, p in enumerate(self._is_pos) if p]
        neg = [i for i, p in enumerate(self._is_pos) if not p]
        pos = pos[:: self.pos_repeat]  # todoruleid: family 6 (missed)
        return neg + pos

    def __iter__(self) -> Iterator[int]:
        pool = self._pool()
        if self.shuffle:
            order = torch.randperm(len(pool)).tolist()
            pool = [pool[i] for i in order]
        total = -(-len(pool) // self.num_replicas) * self.num_replicas
        pool += pool[: total - len(pool)]
        return iter(pool[self.rank:total:self.num_replicas])

    def __len__(self) -> int:
        return -(-len(self._pool()) // self.num_replicas)

def collate_graphs(batch: List[MolGraph]) -> Dict[str, torch.Tensor]:
    bsz = len(batch)
    max_n = max(g.num_nodes for g in batch)
    x = batch[0].x.new_zeros(bsz, max_n, batch[0].x.size(1))
    node_mask = torch.zeros(bsz, max_n, dtype=torch.bool)
    spd = torch.full((bsz, max_n, max_n), MAX_SPD + 1, dtype=torch.long)
    edge = torch.zeros(bsz, max_n, max_n, BOND_DIM)
    degree = torch.zeros(bsz, max_n, dtype=torch.long)
    for b, g in enumerate(batch):
        n = g.num_nodes
        x[b, :n] = g.x
        node_mask[b, :n] = True
        spd[b, :n, :n] = g.spd
        if g.edge_index.numel():
            src, dst = g.edge_index
            edge[b, src, dst] = g.edge_attr
            degree[b, :n] = torch.bincount(src, minlength=n)
    return {"x": x, "node_mask": node_mask, "spd": spd, "edge": edge, "degree": degree.clamp_(max=8),
            "y": torch.stack([g.y for g in batch]), "y_mask": torch.stack([g.y_mask for g in batch])}

@dataclass
class MolDataModule:
    csv_path: str
    smiles_col: str
    task_cols: List[str]
    task_type: str = "classification"
    batch_size: int = 64
    num_workers: int = 4
    seed: int = 0
    split: Tuple[float, float, float] = (0.8, 0.1, 0.1)
    feature_plugin: Optional[str] = DEFAULT_FEATURE_PLUGIN
    cache_dir: Optional[str] = None
    augment_mask_prob: float = 0.1
    train_ds: Optional[MolDataset] = None
    val_ds: Optional[MolDataset] = None
    test_ds: Optional[MolDataset] = None

    @property
    def num_tasks(self) -> int:
        return len(self.task_cols)

    @property
    def atom_dim(self) -> int:
        return self.train_ds.graphs[0].x.size(1) if self.train_ds else ATOM_DIM

    def setup(self) -> None:
        plugin = load_feature_plugin(self.feature_plugin)
        graphs = build_graphs(self.csv_path, self.smiles_col, self.task_cols, self.task_type,
                              cache_dir=self.cache_dir, plugin=plugin)
        tr, va, te = scaffold_split(graphs, self.split)
        self.train_ds = MolDataset([graphs[i] for i in tr], augment=True, mask_prob=self.augment_mask_prob, seed=self.seed)
        self.val_ds = MolDataset([graphs[i] for i in va])
        self.test_ds = MolDataset([graphs[i] for i in te])

    def _loader(self, ds: MolDataset, sampler) -> DataLoader:
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, shuffle=False,
                          num_workers=self.num_workers, collate_fn=collate_graphs, pin_memory=torch.cuda.is_available(),
                          worker_init_fn=worker_init_fn, persistent_workers=self.num_workers > 0)

    def train_dataloader(self, world_size: int, rank: int) -> DataLoader:
        sampler = ScaffoldBalancedSampler(self.train_ds, num_replicas=world_size, rank=rank)
        return self._loader(self.train_ds, sampler)

    def eval_dataloader(self, split: str, world_size: int, rank: int) -> DataLoader:
        ds = self.val_ds if split == "val" else self.test_ds
        sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=False) if world_size > 1 else None
        return self._loader(ds, sampler)
