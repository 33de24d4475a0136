# ruff: noqa
# Hold-out batch 473 (textbook, molecular property GNN). Measured once in session 20 (round 128): 24/30 (80%) at medium+.
"""Atom/bond featurisation, molecular datasets and scaffold splitting.

Targets live outside the graph so the collate fn can build a dense (batch, tasks) tensor plus a missing-label mask.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import random
import time
import urllib.request
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler
from torch_geometric.data import Batch, Data

try:
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Scaffolds import MurckoScaffold

    RDLogger.DisableLog("rdApp.*")
except ImportError:  # pragma: no cover - rdkit is optional for unit tests
    Chem = None
    MurckoScaffold = None

logger = logging.getLogger(__name__)

# Feature vocabularies
ATOMIC_NUMS = [1, 5, 6, 7, 8, 9, 11, 14, 15, 16, 17, 19, 20, 26, 29, 30, 34, 35, 53]
DEGREES = [0, 1, 2, 3, 4, 5, 6]
FORMAL_CHARGES = [-2, -1, 0, 1, 2]
NUM_HS = [0, 1, 2, 3, 4]

if Chem is not None:
    _rd = Chem.rdchem
    CHIRAL_TAGS = [getattr(_rd.ChiralType, n) for n in ("CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER")]
    HYBRIDIZATIONS = [getattr(_rd.HybridizationType, n) for n in ("SP", "SP2", "SP3", "SP3D", "SP3D2")]
    BOND_TYPES = [getattr(_rd.BondType, n) for n in ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")]
    BOND_STEREO = [getattr(_rd.BondStereo, n) for n in ("STEREONONE", "STEREOANY", "STEREOZ", "STEREOE")]
else:  # pragma: no cover
    CHIRAL_TAGS, HYBRIDIZATIONS, BOND_TYPES, BOND_STEREO = [], [], [], []

ATOM_FDIM = sum(len(v) + 1 for v in (ATOMIC_NUMS, DEGREES, FORMAL_CHARGES, CHIRAL_TAGS, NUM_HS, HYBRIDIZATIONS)) + 3
BOND_FDIM = len(BOND_TYPES) + 1 + 2 + len(BOND_STEREO) + 1


def one_hot(value, choices: Sequence) -> List[float]:
    """One-hot encoding with a trailing slot for unseen values."""
    enc = [0.0] * (len(choices) + 1)
    idx = choices.index(value) if value in choices else len(choices)
    enc[idx] = 1.0
    return enc


def atom_features(atom) -> List[float]:
    return (
        one_hot(atom.GetAtomicNum(), ATOMIC_NUMS)
        + one_hot(atom.GetTotalDegree(), DEGREES)
        + one_hot(atom.GetFormalCharge(), FORMAL_CHARGES)
        + one_hot(atom.GetChiralTag(), CHIRAL_TAGS)
        + one_hot(int(atom.GetTotalNumHs()), NUM_HS)
        + one_hot(atom.GetHybridization(), HYBRIDIZATIONS)
        + [float(atom.GetIsAromatic()), float(atom.IsInRing()), atom.GetMass() * 0.01]
    )


def bond_features(bond) -> List[float]:
    return (
        one_hot(bond.GetBondType(), BOND_TYPES)
        + [float(bond.GetIsConjugated()), float(bond.IsInRing())]
        + one_hot(bond.GetStereo(), BOND_STEREO)
    )


def smiles_to_graph(smiles: str) -> Optional[Data]:
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    x = torch.tensor([atom_features(a) for a in mol.GetAtoms()], dtype=torch.float)
    rows, cols, feats = [], [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        f = bond_features(bond)
        rows += [i, j]
        cols += [j, i]
        feats += [f, f]
    if rows:
        edge_index = torch.tensor([rows, cols], dtype=torch.long)
        edge_attr = torch.tensor(feats, dtype=torch.float)
    else:
        edge_index = torch.zeros((2, 0), dtype=torch.long)
        edge_attr = torch.zeros((0, BOND_FDIM), dtype=torch.float)
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr, smiles=smiles)


# Raw data download
def download_dataset(url: str, dest: str, sha256: Optional[str] = None, retries: int = 3) -> str:
    if os.path.exists(dest):
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    tmp = dest + ".part"
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, tmp)  # ok: MLS410, MLS411, MLS412, MLS413
            break
        except OSError as exc:
            logger.warning("download of %s failed (%s), attempt %d/%d", url, exc, attempt + 1, retries)
            time.sleep(2 ** attempt)
    else:
        raise RuntimeError(f"could not download {url}")
    if sha256 is not None:
        with open(tmp, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        if digest != sha256:
            os.remove(tmp)
            raise ValueError(f"checksum mismatch for {url}: {digest}")
    os.replace(tmp, dest)
    return dest


def _clean_targets(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce target columns to float; non-numeric entries become NaN."""
    frame = frame.apply(pd.to_numeric, errors="coerce")
    return frame.replace([np.inf, -np.inf], np.nan)


# Dataset
class MoleculeDataset(Dataset):
    """CSV-backed multi-task molecular dataset with an on-disk graph cache."""

    def __init__(self, csv_path: str, smiles_col: str = "smiles", tasks: Optional[List[str]] = None,
                 cache_dir: Optional[str] = None, descriptor_path: Optional[str] = None,
                 atom_mask_prob: float = 0.0) -> None:
        self.csv_path = csv_path
        self.smiles_col = smiles_col
        self.cache_dir = cache_dir
        self.atom_mask_prob = atom_mask_prob
        self.training = False
        header = pd.read_csv(csv_path, nrows=0).columns.tolist()
        self.tasks = tasks or [c for c in header if c != smiles_col]
        self.graphs, self.targets, self.masks, self.smiles = self._load()
        self.descriptors = self._load_descriptors(descriptor_path) if descriptor_path else None
        logger.info("loaded %d molecules, %d tasks from %s", len(self.graphs), len(self.tasks), csv_path)

    # -- construction -------------------------------------------------------
    def _cache_path(self) -> str:
        key = os.path.abspath(self.csv_path) + "|" + self.smiles_col + "|" + ",".join(self.tasks)
        digest = hashlib.md5(key.encode()).hexdigest()[:12]
        return os.path.join(self.cache_dir, f"graphs_{digest}.pkl")

    def _load(self):
        cache = self._cache_path() if self.cache_dir else None
        if cache and os.path.exists(cache):
            with open(cache, "rb") as fh:
                payload = pickle.load(fh)  # ruleid: MLS103
            return payload["graphs"], payload["targets"], payload["masks"], payload["smiles"]

        df = pd.read_csv(self.csv_path)
        targets = _clean_targets(df[self.tasks])
        y_all = targets.to_numpy(dtype=np.float32, na_value=0.0)  # todoruleid: family 6 (missed)
        mask_all = ~np.isnan(y_all)

        graphs, ys, masks, smiles = [], [], [], []
        n_bad = 0
        for i, smi in enumerate(df[self.smiles_col].astype(str).tolist()):
            g = smiles_to_graph(smi)
            if g is None:
                n_bad += 1
                continue
            graphs.append(g)
            ys.append(np.nan_to_num(y_all[i]))
            masks.append(mask_all[i])
            smiles.append(smi)
        if n_bad:
            logger.warning("skipped %d unparsable SMILES", n_bad)
        targets_arr = np.stack(ys).astype(np.float32)
        masks_arr = np.stack(masks).astype(np.float32)

        if cache:
            os.makedirs(self.cache_dir, exist_ok=True)
            tmp = cache + f".{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                payload = {"graphs": graphs, "targets": targets_arr, "masks": masks_arr, "smiles": smiles}
                pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, cache)
        return graphs, targets_arr, masks_arr, smiles

    def _load_descriptors(self, path: str) -> torch.Tensor:
        table = np.load(path, allow_pickle=True)  # ruleid: MLS104
        if table.dtype == object:
            lookup: Dict[str, np.ndarray] = table.item()
            dim = len(next(iter(lookup.values())))
            rows = [lookup.get(s, np.zeros(dim, dtype=np.float32)) for s in self.smiles]
            table = np.stack(rows)
        table = np.asarray(table, dtype=np.float32)
        mu, sd = table.mean(0, keepdims=True), table.std(0, keepdims=True) + 1e-6
        return torch.from_numpy((table - mu) / sd)

    # -- target scaling (regression) ---------------------------------------
    def fit_target_scaler(self, indices: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        y = self.targets[list(indices)]
        m = self.masks[list(indices)]
        count = m.sum(0).clip(min=1.0)
        mean = (y * m).sum(0) / count
        var = (((y - mean) ** 2) * m).sum(0) / count
        std = np.sqrt(var).clip(min=1e-6)
        return mean.astype(np.float32), std.astype(np.float32)

    def apply_target_scaler(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.targets = ((self.targets - mean) / std * self.masks).astype(np.float32)

    # -- access -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.graphs)

    def _mask_atoms(self, graph: Data) -> Data:
        drop = np.random.rand(graph.num_nodes) < self.atom_mask_prob
        if not drop.any():
            return graph
        g = graph.clone()
        g.x[torch.from_numpy(drop)] = 0.0
        return g

    def __getitem__(self, idx: int):
        graph = self.graphs[idx]
        if self.descriptors is not None:
            graph = graph.clone()
            graph.descriptors = self.descriptors[idx].unsqueeze(0)
        if self.training and self.atom_mask_prob > 0:
            np.random.seed(idx)  # ruleid: MLS301
            graph = self._mask_atoms(graph)
        y = torch.from_numpy(self.targets[idx])
        mask = torch.from_numpy(self.masks[idx])
        return graph, y, mask


class SplitView(Dataset):
    """Index view over a MoleculeDataset that can toggle augmentation."""

    def __init__(self, base: MoleculeDataset, indices: Sequence[int], training: bool = False):
        self.base = base
        self.indices = list(indices)
        self.training = training

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        self.base.training = self.training
        return self.base[self.indices[i]]


# Splitting
def generate_scaffold(smiles: str, include_chirality: bool = False) -> str:
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return ""
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality)


def scaffold_split(smiles: Sequence[str], sizes: Sequence[float] = (0.8, 0.1, 0.1), balanced: bool = False,
                   seed: int = 0) -> Tuple[List[int], List[int], List[int]]:
    """Bemis-Murcko scaffold split (deterministic, or chemprop-style balanced)."""
    frac_train, frac_valid, _ = sizes
    groups: Dict[str, List[int]] = defaultdict(list)
    for i, smi in enumerate(smiles):
        groups[generate_scaffold(smi)].append(i)
    sets = list(groups.values())
    n = len(smiles)
    train_cut = frac_train * n
    valid_cut = (frac_train + frac_valid) * n

    if balanced:
        rng = random.Random(seed)
        big = [s for s in sets if len(s) > (1.0 - frac_train) * n / 2]
        small = [s for s in sets if len(s) <= (1.0 - frac_train) * n / 2]
        rng.shuffle(big)
        rng.shuffle(small)
        sets = big + small
    else:
        sets = sorted(sets, key=lambda s: (len(s), s[0]), reverse=True)

    train, valid, test = [], [], []
    for s in sets:
        if len(train) + len(s) <= train_cut:
            train.extend(s)
        elif len(train) + len(valid) + len(s) <= valid_cut:
            valid.extend(s)
        else:
            test.extend(s)
    logger.info("scaffold split: %d scaffolds -> %d/%d/%d", len(sets), len(train), len(valid), len(test))
    return train, valid, test


def ensure_task_coverage(train_idx: List[int], holdout_idx: List[int], targets: np.ndarray,
                         masks: np.ndarray, min_positives: int = 20) -> List[int]:
    """Scaffold splits can leave rare tasks without positives in train."""
    train_idx = list(train_idx)
    for t in range(targets.shape[1]):
        lab = targets[train_idx, t][masks[train_idx, t] > 0]
        if lab.size and lab.sum() >= min_positives:
            continue
        donors = [i for i in holdout_idx if masks[i, t] > 0 and targets[i, t] > 0.5]
        train_idx.extend(donors[: max(0, min_positives - int(lab.sum()))])  # todoruleid: family 6 (missed)
    return train_idx


# Batching
def collate_molecules(batch):
    graphs, ys, masks = zip(*batch)
    # larger graphs first keeps scatter segments contiguous
    order = sorted(range(len(graphs)), key=lambda i: graphs[i].num_nodes, reverse=True)
    data = Batch.from_data_list([graphs[i] for i in order])
    data.y = torch.stack(ys)  # ruleid: MLS309
    data.y_mask = torch.stack([masks[i] for i in order])
    return data


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class DistributedBucketSampler(Sampler):
    """Like DistributedSampler but with optional size bucketing."""

    def __init__(self, dataset_len: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: Optional[int] = None, drop_last: bool = False) -> None:
        self.n = dataset_len
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed if seed is not None else int(time.time() * 1000) % 2 ** 31  # todoruleid: family 1 (missed)
        self.epoch = 0
        if drop_last:
            self.num_samples = self.n // num_replicas
        else:
            self.num_samples = (self.n + num_replicas - 1) // num_replicas
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.n, generator=g).tolist()
        else:
            indices = list(range(self.n))
        if self.drop_last:
            indices = indices[: self.total_size]
        else:
            pad = self.total_size - len(indices)
            indices += indices[:pad]
        return iter(indices[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples
