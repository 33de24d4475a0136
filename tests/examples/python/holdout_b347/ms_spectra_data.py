# ruff: noqa
# Hold-out batch 347 (short files). Measured once in session 12 (round 96): 11/17 (65%) at medium+.
"""Spectrum library loading for the peptide-spectrum (MS/MS) embedding model."""
import argparse
import glob
import os

import numpy as np
import torch
from torch.utils.data import Dataset


def bin_spectrum(mz, intensity, max_mz=2000.0, bin_size=0.1):
    n_bins = int(max_mz / bin_size)
    idx = np.clip((mz / bin_size).astype(np.int64), 0, n_bins - 1)
    vec = np.zeros(n_bins, dtype=np.float32)
    np.maximum.at(vec, idx, np.sqrt(intensity).astype(np.float32))
    norm = np.linalg.norm(vec)
    return vec / norm if norm > 0 else vec


class SpectrumLibrary(Dataset):
    """Reads .npz shards with ragged peak lists (mz, intensity per spectrum) and precursor info."""

    def __init__(self, shard_dir, max_mz=2000.0, bin_size=0.1):
        self.max_mz, self.bin_size = max_mz, bin_size
        self.records = []
        for path in sorted(glob.glob(os.path.join(shard_dir, "*.npz"))):
            shard = np.load(path, allow_pickle=True)  # ruleid: MLS104
            peaks, prec = shard["peaks"], shard["precursor"]
            for p, (pmz, charge, pep_id) in zip(peaks, prec):
                self.records.append((p[0], p[1], float(pmz), int(charge), int(pep_id)))

    def __len__(self):
        return len(self.records)

    def __getitem__(self, idx):
        mz, inten, pmz, charge, pep_id = self.records[idx]
        vec = bin_spectrum(np.asarray(mz), np.asarray(inten), self.max_mz, self.bin_size)
        meta = torch.tensor([pmz / self.max_mz, charge / 6.0], dtype=torch.float32)
        return torch.from_numpy(vec), meta, pep_id


def load_encoder(model, ckpt_path):
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state.get("model", state), strict=False)
    if unexpected:
        raise RuntimeError(f"unexpected keys in {ckpt_path}: {unexpected[:5]}")
    return model, missing


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--library", required=True, help="directory of spectrum shards (user supplied)")
    ap.add_argument("--bin-size", type=float, default=0.1)
    args = ap.parse_args()
    lib = SpectrumLibrary(args.library, bin_size=args.bin_size)
    print(f"{len(lib)} spectra, vector dim {lib[0][0].numel()}")
