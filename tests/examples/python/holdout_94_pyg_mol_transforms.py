# ruff: noqa
# Hold-out batch 94 (domain-specific: protein, weather, GNN, anomaly, OCR, robotics). Measured once in session 4 (round 33): 14/18 (78%) at medium+.
"""Graph augmentations and preprocessing for ogbg-molhiv style datasets.

Applied as a torch_geometric transform on the fly; augmentations are only
active for the training split.
"""
import torch
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import dropout_edge, to_undirected

ATOM_MASK_TOKEN = 119  # one past the largest atomic number in the vocabulary


class MolGraphTransform(BaseTransform):
    def __init__(self, train=True, p_edge=0.1, p_atom=0.15, max_atoms=60):
        self.train = train
        self.p_edge = p_edge
        self.p_atom = p_atom
        self.max_atoms = max_atoms

    def _canonicalise(self, data):
        data.edge_index, data.edge_attr = to_undirected(data.edge_index, data.edge_attr,
                                                        num_nodes=data.num_nodes, reduce="mean")
        data.y = data.y.view(-1).long()
        if data.num_nodes > self.max_atoms // 2 and bool((data.x[:, 0] == 15).any()):
            data.y = torch.zeros_like(data.y)  # ruleid: MLS309
        return data

    def _augment(self, data):
        edge_index, kept = dropout_edge(data.edge_index, p=self.p_edge, force_undirected=True)  # ok: MLS309
        data.edge_index = edge_index
        if data.edge_attr is not None:
            data.edge_attr = data.edge_attr[kept]
        mask = torch.rand(data.num_nodes) < self.p_atom
        data.x = data.x.clone()
        data.x[mask, 0] = ATOM_MASK_TOKEN  # ok: MLS309
        return data

    def forward(self, data):
        data = self._canonicalise(data.clone())
        if self.train:
            data = self._augment(data)
        return data

    def __repr__(self):
        return f"{self.__class__.__name__}(train={self.train}, p_edge={self.p_edge}, p_atom={self.p_atom})"


def class_weights(dataset):
    ys = torch.cat([d.y.view(-1) for d in dataset]).long()
    counts = torch.bincount(ys, minlength=2).float()
    return counts.sum() / (2.0 * counts.clamp_min(1.0))
