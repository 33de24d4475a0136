# ruff: noqa
# Hold-out batch 415 (short files, 16 domains). Measured once in session 17 (round 113): 15/17 (88%) at medium+.
"""Feature loading for residue-residue contact prediction (MSA + PLM embeddings)."""
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

AA = "ACDEFGHIKLMNPQRSTVWY-"
CONTACT_CUTOFF = 8.0  # Angstrom, C-beta (C-alpha for Gly)


def load_backbone(ckpt_path, model, map_location="cpu"):
    state = torch.load(ckpt_path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state.get("model", state), strict=False)
    log.info("backbone loaded: %d missing, %d unexpected keys", len(missing), len(unexpected))
    return model


def distance_to_contacts(dist, min_sep=6):
    L = dist.shape[0]
    idx = np.arange(L)
    sep = np.abs(idx[:, None] - idx[None, :])
    contacts = (dist < CONTACT_CUTOFF) & (sep >= min_sep)
    contacts = contacts.astype(np.float32)
    contacts[np.isnan(dist)] = -1.0  # ignored in the loss
    return contacts


class ContactMapDataset(Dataset):
    """Each chain has <feature_dir>/<id>.npz produced by the upstream MSA pipeline."""

    def __init__(self, feature_dir, id_list, max_len=512, min_sep=6):
        self.feature_dir = Path(feature_dir)
        self.max_len, self.min_sep = max_len, min_sep
        self.ids = [line.strip() for line in open(id_list) if line.strip()]

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        chain_id = self.ids[i]
        feats = np.load(self.feature_dir / f"{chain_id}.npz", allow_pickle=True)  # ruleid: MLS104
        msa = feats["msa"][:, : self.max_len]
        emb = feats["embedding"][: self.max_len]
        dist = feats["cb_dist"][: self.max_len, : self.max_len]
        onehot = np.eye(len(AA), dtype=np.float32)[msa[0]]
        profile = np.stack([(msa == k).mean(0) for k in range(len(AA))], -1).astype(np.float32)
        return {
            "id": chain_id,
            "seq_feat": torch.from_numpy(np.concatenate([onehot, profile, emb], -1)),
            "contacts": torch.from_numpy(distance_to_contacts(dist, self.min_sep)),
        }
