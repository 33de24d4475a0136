# ruff: noqa
# Hold-out batch 519 (short files, 16 domains). Measured once in session 23 (round 139): 13/17 (76%) at medium+.
"""Spectral library access and model loading for peptide-spectrum match rescoring."""
import hashlib
import logging
import os
import pickle
import urllib.request

import numpy as np
import torch

log = logging.getLogger(__name__)
LIB_URL = os.environ.get("SPECLIB_URL", "https://speclib.proteomics-hub.org/human_hcd_2023.pkl")
CACHE = os.path.expanduser("~/.cache/psm_rescore")


def bin_spectrum(mz, intensity, max_mz=2000.0, bin_width=0.02):
    n_bins = int(max_mz / bin_width)
    vec = np.zeros(n_bins, dtype=np.float32)
    idx = np.clip((np.asarray(mz) / bin_width).astype(int), 0, n_bins - 1)
    np.maximum.at(vec, idx, np.sqrt(np.asarray(intensity, dtype=np.float32)))
    norm = np.linalg.norm(vec)
    return vec / norm if norm > 0 else vec


def fetch_library(url=LIB_URL):
    os.makedirs(CACHE, exist_ok=True)
    local = os.path.join(CACHE, hashlib.sha1(url.encode()).hexdigest()[:12] + ".pkl")
    if not os.path.exists(local):
        log.info("downloading spectral library from %s", url)
        urllib.request.urlretrieve(url, local)
    with open(local, "rb") as fh:
        library = pickle.load(fh)  # ruleid: MLS103
    log.info("loaded %d reference spectra", len(library))
    return library


def load_rescorer(model, ckpt_path, device="cpu"):
    state = torch.load(ckpt_path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        log.warning("missing=%s unexpected=%s", missing, unexpected)
    return model.to(device).eval()


def library_candidates(library, precursor_mz, charge, tol_ppm=10.0):
    hits = []
    for peptide, entry in library.items():
        if entry["charge"] != charge:
            continue
        ppm = abs(entry["precursor_mz"] - precursor_mz) / precursor_mz * 1e6
        if ppm <= tol_ppm:
            hits.append((peptide, bin_spectrum(entry["mz"], entry["intensity"])))
    return hits


def cosine_score(query_vec, candidates):
    if not candidates:
        return None, 0.0
    sims = [float(np.dot(query_vec, ref)) for _, ref in candidates]
    best = int(np.argmax(sims))
    return candidates[best][0], sims[best]
