# ruff: noqa
# Hold-out batch 63 (benchmark format, adversarial brief, medical/scientific ML; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 10/18 (56%) at medium+.
"""Multi-task toxicity dataset: SMILES from CSV to PyG graphs with scaffold-aware splitting."""
import random
from collections import defaultdict

import numpy as np
import pandas as pd
import torch
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold
from torch_geometric.data import Dataset
from torch_geometric.utils import from_smiles


class ToxDataset(Dataset):
    def __init__(self, csv_path, tasks, indices=None, train=False, atom_mask_prob=0.1):
        super().__init__()
        df = pd.read_csv(csv_path)
        df = df[df["smiles"].map(lambda s: Chem.MolFromSmiles(s) is not None)]
        self.df = df.iloc[indices] if indices is not None else df.reset_index(drop=True)
        self.tasks = list(tasks)
        self.train = train
        self.atom_mask_prob = atom_mask_prob
        self._ref_group = Chem.MolFromSmarts("c1ccccc1S(=O)(=O)N")

    def len(self):
        return len(self.df)

    def get(self, idx):
        row = self.df.iloc[idx]
        smiles = row["smiles"]
        mol = Chem.MolFromSmiles(smiles)
        if self.train and random.random() < 0.5:
            smiles = Chem.MolToSmiles(mol, doRandom=True)  # ok: MLS309
        data = from_smiles(smiles)
        data.x = data.x.float()
        if self.train:
            keep = torch.rand(data.num_nodes) >= self.atom_mask_prob  # ok: MLS309
            data.x = data.x * keep.unsqueeze(1)
        y = torch.tensor(row[self.tasks].to_numpy(dtype=np.float32)).unsqueeze(0)
        if self.train and mol.HasSubstructMatch(self._ref_group):
            y = torch.where(torch.isnan(y), y, 1.0 - y)  # ruleid: MLS309
        data.y_mask = ~torch.isnan(y)
        data.y = torch.nan_to_num(y, nan=0.0)
        return data


def scaffold_split(csv_path, frac=(0.8, 0.1, 0.1)):
    df = pd.read_csv(csv_path)
    groups = defaultdict(list)
    for i, s in enumerate(df["smiles"]):
        mol = Chem.MolFromSmiles(s)
        if mol is not None:
            groups[MurckoScaffold.MurckoScaffoldSmiles(mol=mol)].append(i)
    buckets = sorted(groups.values(), key=len, reverse=True)
    n = sum(len(b) for b in buckets)
    train, valid, test = [], [], []
    for b in buckets:
        if len(train) + len(b) <= frac[0] * n:
            train += b
        elif len(valid) + len(b) <= frac[1] * n:
            valid += b
        else:
            test += b
    return train, valid, test
