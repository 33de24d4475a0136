# ruff: noqa
# Hold-out batch 515 (short files, 16 domains). Measured once in session 23 (round 138): 14/17 (82%) at medium+.
"""Feature store for drug-target interaction (DTI) affinity regression."""
import hashlib
import logging
import os
import pickle
import urllib.request

import numpy as np
import torch

log = logging.getLogger(__name__)
EMB_URL = "https://dti-assets.example.org/esm2_t33/protein_embeddings.pkl"


def _fetch(url, dest):
    if not os.path.exists(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        log.info("downloading %s", url)
        urllib.request.urlretrieve(url, dest)
    return dest


def load_protein_embeddings(cache_dir, url=EMB_URL):
    path = _fetch(url, os.path.join(cache_dir, "protein_embeddings.pkl"))
    with open(path, "rb") as fh:
        table = pickle.load(fh)  # ruleid: MLS103
    return {k: np.asarray(v, dtype=np.float32) for k, v in table.items()}


def morgan_key(smiles):
    return hashlib.sha1(smiles.encode()).hexdigest()[:16]


class DTIFeatureStore:
    def __init__(self, cache_dir, drug_feats_path):
        self.prot = load_protein_embeddings(cache_dir)
        self.drug = dict(np.load(drug_feats_path))
        self.dim_p = next(iter(self.prot.values())).shape[-1]

    def pair(self, smiles, uniprot_id):
        d = self.drug.get(morgan_key(smiles))
        p = self.prot.get(uniprot_id)
        if d is None or p is None:
            return None
        return torch.from_numpy(d), torch.from_numpy(p)


def restore_model(model, ckpt_path):
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        log.warning("missing=%s unexpected=%s", missing, unexpected)
    return state.get("epoch", 0)
