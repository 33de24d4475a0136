# ruff: noqa
# Hold-out batch 543 (16 short files, one domain each). Measured once in session 24 (round 145): 14/17 (82%) at medium+.
"""Macenko stain normalisation for H&E tiles, with a cached reference target."""
import logging
import os

import joblib
import numpy as np

log = logging.getLogger(__name__)
Io = 240.0


def rgb_to_od(img: np.ndarray) -> np.ndarray:
    return -np.log((img.astype(np.float64) + 1.0) / Io)


def macenko_stain_matrix(img, beta=0.15, alpha=1.0):
    od = rgb_to_od(img).reshape(-1, 3)
    od = od[(od > beta).all(axis=1)]
    _, eigvecs = np.linalg.eigh(np.cov(od.T))
    plane = od @ eigvecs[:, 1:3]
    phi = np.arctan2(plane[:, 1], plane[:, 0])
    lo, hi = np.percentile(phi, alpha), np.percentile(phi, 100 - alpha)
    v1 = eigvecs[:, 1:3] @ np.array([np.cos(lo), np.sin(lo)])
    v2 = eigvecs[:, 1:3] @ np.array([np.cos(hi), np.sin(hi)])
    he = np.stack([v1, v2] if v1[0] > v2[0] else [v2, v1], axis=1)
    return he / np.linalg.norm(he, axis=0, keepdims=True)


class MacenkoNormalizer:
    def __init__(self, target_he=None, target_max_c=None):
        self.target_he = target_he
        self.target_max_c = target_max_c

    def fit(self, ref_img):
        self.target_he = macenko_stain_matrix(ref_img)
        conc = np.linalg.lstsq(self.target_he, rgb_to_od(ref_img).reshape(-1, 3).T, rcond=None)[0]
        self.target_max_c = np.percentile(conc, 99, axis=1)
        return self

    def transform(self, img):
        h, w, _ = img.shape
        he = macenko_stain_matrix(img)
        conc = np.linalg.lstsq(he, rgb_to_od(img).reshape(-1, 3).T, rcond=None)[0]
        conc *= (self.target_max_c / np.percentile(conc, 99, axis=1))[:, None]
        out = Io * np.exp(-self.target_he @ conc)
        return np.clip(out.T.reshape(h, w, 3), 0, 255).astype(np.uint8)


def load_reference(path: str) -> MacenkoNormalizer:
    if path.endswith(".npy"):
        arr = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return MacenkoNormalizer(target_he=arr[:, :2], target_max_c=arr[:2, 2])
    if path.endswith((".joblib", ".pkl")) and os.path.isfile(path):
        log.info("loading fitted normaliser from %s", path)
        return joblib.load(path)  # ruleid: MLS103
    raise ValueError(f"unsupported reference format: {path}")
