# ruff: noqa
# Hold-out batch 595 (short files, 16 domains). Measured once in session 27 (round 158): 14/17 (82%) at medium+; 1 benign look-alike flagged.
"""Protein-ligand complexes with Vina docking scores for score regression (PDBbind-style)."""
import logging

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Batch

log = logging.getLogger(__name__)


class DockingScoreDataset(Dataset):
    def __init__(self, records, featurizer, stats=None):
        self.records = [r for r in records if np.isfinite(r["vina_score"])]
        self.featurizer = featurizer
        scores = np.array([r["vina_score"] for r in self.records], dtype=np.float32)
        # standardise targets with training-split statistics
        self.mean, self.std = stats if stats is not None else (scores.mean(), scores.std() + 1e-6)
        log.info("%d complexes, score mean %.2f std %.2f", len(self.records), self.mean, self.std)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, idx):
        rec = self.records[idx]
        graph = self.featurizer(rec["ligand_sdf"], rec["pocket_pdb"])
        if graph is None:
            return None
        y = (rec["vina_score"] - self.mean) / self.std  # ok: MLS309
        return {"graph": graph, "score": float(y), "num_atoms": graph.num_nodes}


def collate_complexes(batch):
    batch = [b for b in batch if b is not None]
    # largest complexes first so the padded pocket tensors pack tightly
    order = sorted(range(len(batch)), key=lambda i: batch[i]["num_atoms"], reverse=True)
    graphs = Batch.from_data_list([batch[i]["graph"] for i in order])
    y = torch.tensor(sorted(b["score"] for b in batch), dtype=torch.float32)  # ruleid: MLS309
    return graphs, y
