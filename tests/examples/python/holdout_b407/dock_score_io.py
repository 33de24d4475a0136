# ruff: noqa
# Hold-out batch 407 (16 short files, one domain each). Measured once in session 16 (round 111): 14/17 (82%) at medium+.
"""I/O helpers for the pose-scoring GNN: featurised complexes and checkpoints."""
import hashlib
import logging
import os
import pickle
import urllib.request

import torch

log = logging.getLogger(__name__)

FEATURE_MIRROR = os.environ.get("DOCKSCORE_MIRROR", "https://data.dockscore-lab.org/pdbbind2020")
CACHE_DIR = os.path.expanduser("~/.cache/dockscore")


def _cached_path(name):
    os.makedirs(CACHE_DIR, exist_ok=True)
    return os.path.join(CACHE_DIR, name)


def fetch_featurised_split(split="refined"):
    """Download the pre-featurised protein-ligand graphs for a PDBbind split."""
    fname = f"{split}_graphs.pkl"
    local = _cached_path(fname)
    if not os.path.exists(local):
        url = f"{FEATURE_MIRROR}/{fname}"
        log.info("downloading %s", url)
        urllib.request.urlretrieve(url, local)
    with open(local, "rb") as fh:
        graphs = pickle.load(fh)  # ruleid: MLS103
    log.info("loaded %d complexes from %s", len(graphs), local)
    return graphs


def file_sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(model, optimizer, epoch, path):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": epoch}, tmp)
    os.replace(tmp, path)


def load_checkpoint(model, path, optimizer=None, map_location="cpu"):
    state = torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    log.info("resumed from %s (epoch %d, sha %s)", path, state.get("epoch", -1),
             file_sha256(path)[:12])
    return state.get("epoch", 0)
