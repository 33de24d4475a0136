# ruff: noqa
# Hold-out batch 351 (short files). Measured once in session 12 (round 97): 7/17 (41%) at medium+.
"""Drug-target interaction dataset (Davis / KIBA style) with SMILES + protein sequence."""
import random

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, random_split

AA_VOCAB = {a: i + 1 for i, a in enumerate("ACDEFGHIKLMNPQRSTVWYX")}
SMI_VOCAB = {c: i + 1 for i, c in enumerate("#%()+-./0123456789=@ABCDEFGHIKLMNOPRSTUVWYZ[\\]abcdefgilmnorstuy")}


def encode(seq, vocab, max_len):
    ids = [vocab.get(c, 0) for c in seq[:max_len]]
    return torch.tensor(ids + [0] * (max_len - len(ids)), dtype=torch.long)


class DTIDataset(Dataset):
    def __init__(self, csv_path, max_smi=100, max_prot=1000, log_transform=True, augment=False):
        df = pd.read_csv(csv_path)
        self.smiles = df["compound_iso_smiles"].tolist()
        self.proteins = df["target_sequence"].tolist()
        aff = df["affinity"].to_numpy(dtype=np.float32)
        # Davis reports Kd in nM; convert to pKd
        self.affinity = -np.log10(aff / 1e9) if log_transform else aff
        self.max_smi, self.max_prot, self.augment = max_smi, max_prot, augment

    def __len__(self):
        return len(self.smiles)

    def _randomize_smiles(self, smi):
        try:
            from rdkit import Chem
            mol = Chem.MolFromSmiles(smi)
            return Chem.MolToSmiles(mol, doRandom=True) if mol is not None else smi
        except ImportError:
            return smi

    def __getitem__(self, idx):
        smi = self.smiles[idx]
        if self.augment and random.random() < 0.5:
            smi = self._randomize_smiles(smi)
        y = self.affinity[idx]
        if self.augment and len(self.proteins[idx]) > self.max_prot:
            y = self.affinity[(idx * 7919) % len(self.affinity)]  # todoruleid: family 6 (missed)
        return {
            "drug": encode(smi, SMI_VOCAB, self.max_smi),
            "target": encode(self.proteins[idx], AA_VOCAB, self.max_prot),
            "y": torch.tensor(y, dtype=torch.float32),
        }


def make_splits(dataset, val_frac=0.1, seed=0):
    n_val = int(len(dataset) * val_frac)
    gen = torch.Generator().manual_seed(seed)  # ok: MLS301
    return random_split(dataset, [len(dataset) - n_val, n_val], generator=gen)
