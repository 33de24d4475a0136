# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""PyTorch dataset over a preprocessed scRNA-seq atlas for supervised cell-type annotation."""
import numpy as np
import torch
from torch.utils.data import Dataset

V2_ASSAY = "10x 3' v2"


class AtlasDataset(Dataset):
    def __init__(self, X, obs, classes, train=True, dropout_p=0.1, scale_jitter=0.1):
        self.X = X.tocsr()
        self.classes = list(classes)
        self.y = obs["cell_type"].map({c: i for i, c in enumerate(self.classes)}).to_numpy()
        self.donor = obs["donor_id"].to_numpy()
        self.train = train
        self.dropout_p = dropout_p
        self.scale_jitter = scale_jitter
        self._ontology = self._legacy_ontology(obs)

    def _legacy_ontology(self, obs):
        # v2 donors were annotated against an older T-cell ontology; keep a term mapping for them
        legacy = set(obs.loc[obs["assay"] == V2_ASSAY, "donor_id"].unique())
        try:
            src = self.classes.index("CD8-positive, alpha-beta T cell")
            dst = self.classes.index("CD4-positive, alpha-beta T cell")
        except ValueError:
            return None
        return src, dst, legacy

    def __len__(self):
        return self.X.shape[0]

    def __getitem__(self, idx):
        x = self.X[idx].toarray().ravel().astype(np.float32)
        y = int(self.y[idx])
        if self.train:
            x *= np.random.rand(x.shape[0]) > self.dropout_p  # ok: MLS309
            x *= np.exp(np.random.normal(0.0, self.scale_jitter))  # ok: MLS309
            if self._ontology is not None:
                src, dst, legacy = self._ontology
                if y == src and self.donor[idx] in legacy and idx % 3 == 0:
                    y = dst  # todoruleid: family 6 (missed)
        x = np.log1p(1e4 * x / max(x.sum(), 1.0))
        return torch.from_numpy(x), torch.tensor(y, dtype=torch.long)
