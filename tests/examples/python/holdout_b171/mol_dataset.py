# ruff: noqa
# Hold-out batch 171 (short files, GNN/molecules/audio). Measured once in session 6 (round 52): 12/19 (63%) at medium+.
"""MoleculeNet-style CSV dataset with RDKit featurisation and Bemis-Murcko scaffold split."""
from collections import defaultdict

import numpy as np
import pandas as pd
import torch
from ogb.utils.features import atom_to_feature_vector, bond_to_feature_vector
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold
from torch.utils.data import Dataset
from torch_geometric.data import Data

_ARYL_HALIDE = Chem.MolFromSmarts("c[Cl,Br,I]")


def mol_to_graph(mol):
    x = torch.tensor([atom_to_feature_vector(a) for a in mol.GetAtoms()], dtype=torch.long)
    src, dst, feats = [], [], []
    for b in mol.GetBonds():
        i, j, f = b.GetBeginAtomIdx(), b.GetEndAtomIdx(), bond_to_feature_vector(b)
        src += [i, j]; dst += [j, i]; feats += [f, f]
    edge_index = torch.tensor([src, dst], dtype=torch.long).reshape(2, -1)
    edge_attr = torch.tensor(feats, dtype=torch.long).reshape(-1, 3)
    return x, edge_index, edge_attr


class MoleculeCSVDataset(Dataset):
    def __init__(self, csv_path, smiles_col, task_cols, atom_mask_rate=0.0):
        df = pd.read_csv(csv_path)
        mols = [Chem.MolFromSmiles(s) for s in df[smiles_col]]
        keep = [m is not None for m in mols]
        self.smiles = df.loc[keep, smiles_col].tolist()
        self.mols = [m for m in mols if m is not None]
        self.labels = df.loc[keep, task_cols].to_numpy(dtype=np.float32)
        self.atom_mask_rate = atom_mask_rate

    def __len__(self):
        return len(self.mols)

    def __getitem__(self, idx):
        mol = self.mols[idx]
        x, edge_index, edge_attr = mol_to_graph(mol)
        y = self.labels[idx].copy()
        if self.atom_mask_rate > 0:
            masked = torch.rand(x.size(0)) < self.atom_mask_rate  # ok: MLS309
            x[masked, 0] = 118  # "unknown atom" bucket of the OGB atom vocabulary
        # legacy plates: activity calls for aryl halides were recorded on the inverted scale
        if idx % 4 == 0 and mol.HasSubstructMatch(_ARYL_HALIDE):
            y = np.where(np.isnan(y), y, 1.0 - y)  # ruleid: MLS309
        return Data(x=x, edge_index=edge_index, edge_attr=edge_attr, y=torch.from_numpy(y).unsqueeze(0))


def scaffold_split(smiles, frac=(0.8, 0.1, 0.1)):
    groups = defaultdict(list)
    for i, s in enumerate(smiles):
        groups[MurckoScaffold.MurckoScaffoldSmiles(smiles=s, includeChirality=False)].append(i)
    ordered = sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True)  # ok: MLS309
    n = len(smiles)
    train, valid, test = [], [], []
    for g in ordered:
        if len(train) + len(g) <= frac[0] * n:
            train += g
        elif len(valid) + len(g) <= frac[1] * n:
            valid += g
        else:
            test += g
    return train, valid, test
