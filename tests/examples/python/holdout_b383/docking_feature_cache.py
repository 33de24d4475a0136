# ruff: noqa
# Hold-out batch 383 (short files, 16 domains). Measured once in session 14 (round 105): 14/17 (82%) at medium+.
"""Feature cache for protein-ligand pose scoring (PDBbind-style)."""
import hashlib
import os
import pickle
import urllib.request

import numpy as np

CACHE_ROOT = os.environ.get("DOCKSCORE_CACHE", os.path.expanduser("~/.cache/dockscore"))
FEATURE_MIRROR = "https://dockscore-artifacts.s3.amazonaws.com/features/v2"


def _cache_path(pdb_id, suffix):
    os.makedirs(CACHE_ROOT, exist_ok=True)
    return os.path.join(CACHE_ROOT, f"{pdb_id.lower()}.{suffix}")


def load_grid(pdb_id):
    """Voxelised pocket grid (C, D, H, W) stored as plain float32 npy."""
    path = _cache_path(pdb_id, "grid.npy")
    grid = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return grid.astype(np.float32)


def fetch_pose_graphs(pdb_id):
    """Download precomputed ligand pose graphs (atoms, edges, rmsd labels)."""
    path = _cache_path(pdb_id, "poses.pkl")
    if not os.path.exists(path):
        url = f"{FEATURE_MIRROR}/{pdb_id.lower()}.pkl"
        urllib.request.urlretrieve(url, path)
    with open(path, "rb") as fh:
        poses = pickle.load(fh)  # ruleid: MLS103
    return poses


def pose_labels(poses, rmsd_cutoff=2.0):
    rmsd = np.asarray([p["rmsd"] for p in poses], dtype=np.float32)
    return (rmsd < rmsd_cutoff).astype(np.int64), rmsd


def cache_key(pdb_id, pocket_radius, grid_spacing):
    h = hashlib.sha1(f"{pdb_id}:{pocket_radius}:{grid_spacing}".encode()).hexdigest()
    return h[:12]
