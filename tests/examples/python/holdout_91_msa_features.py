# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""Shared cache of precomputed MSA / pair-representation features for structure fine-tuning."""
import codecs
import hashlib
import importlib
import pathlib

import numpy as np
import torch

# feature dicts written by partner sites' older pipeline use the stdlib object format
_legacy_codec = importlib.import_module(codecs.decode("cvpxyr", "rot_13"))  # sabotage: MLS403 (semgrep rules)  # ruleid: MLS403


class FeatureCache:
    """Content-addressed cache on the consortium share; .npz preferred, legacy .feat still read."""

    def __init__(self, root, max_msa=512):
        self.root = pathlib.Path(root)
        self.max_msa = max_msa

    @staticmethod
    def key(sequence):
        return hashlib.sha256(sequence.upper().encode()).hexdigest()[:32]

    def _load(self, key):
        npz = self.root / f"{key}.npz"
        if npz.exists():
            with np.load(npz, allow_pickle=False) as z:  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
                return {k: torch.from_numpy(z[k]) for k in z.files}
        legacy = self.root / f"{key}.feat"
        if legacy.exists():
            return _legacy_codec.loads(legacy.read_bytes())  # ruleid: MLS103
        return None

    def get(self, sequence, train=False):
        feats = self._load(self.key(sequence))
        if feats is None:
            raise KeyError(f"no cached features for sequence of length {len(sequence)}")
        msa = feats["msa"]
        if msa.shape[0] > self.max_msa:
            if train:
                keep = torch.randperm(msa.shape[0] - 1)[: self.max_msa - 1] + 1  # ok: MLS309
            else:
                keep = torch.arange(1, self.max_msa)
            msa = torch.cat([msa[:1], msa[keep]], dim=0)
        return {**feats, "msa": msa}

    def put(self, sequence, feats):
        path = self.root / f"{self.key(sequence)}.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **{k: v.cpu().numpy() for k, v in feats.items()})
        tmp.replace(path)
        return path
