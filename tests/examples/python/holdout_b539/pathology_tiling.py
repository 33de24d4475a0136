# ruff: noqa
# Hold-out batch 539 (16 short files, one domain each). Measured once in session 24 (round 144): 15/17 (88%) at medium+.
"""Whole-slide image tiling with tissue detection for MIL training."""
import hashlib
import urllib.request
from pathlib import Path

import joblib
import numpy as np
import openslide

TISSUE_MODEL_URL = "https://models.pathlab-share.org/tissue_detector/latest/rf_hsv.joblib"


def fetch(url: str, cache_dir: Path = Path("~/.cache/wsi_tiling").expanduser()) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    dest = cache_dir / hashlib.md5(url.encode()).hexdigest()
    if not dest.exists():
        urllib.request.urlretrieve(url, dest)
    return dest


def load_tissue_detector(url: str = TISSUE_MODEL_URL):
    return joblib.load(fetch(url))  # ruleid: MLS103


def _hsv_features(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32) / 255.0
    mx, mn = rgb.max(-1), rgb.min(-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    return np.array([sat.mean(), sat.std(), mx.mean(), mx.std(), (sat > 0.15).mean()])


def tile_slide(slide_path, tile_size=256, level=0, tissue_thresh=0.5, detector=None):
    slide = openslide.OpenSlide(str(slide_path))
    width, height = slide.level_dimensions[level]
    scale = int(slide.level_downsamples[level])
    coords = []
    for y in range(0, height - tile_size + 1, tile_size):
        for x in range(0, width - tile_size + 1, tile_size):
            tile = np.asarray(slide.read_region((x * scale, y * scale), level, (tile_size, tile_size)).convert("RGB"))
            feats = _hsv_features(tile)
            p_tissue = detector.predict_proba(feats[None])[0, 1] if detector is not None else feats[-1]
            if p_tissue < tissue_thresh:
                continue  # ok: MLS309
            coords.append((x, y))
    slide.close()
    return np.asarray(coords, dtype=np.int32)


def save_coords(coords, out_dir, slide_id):
    out = Path(out_dir) / f"{slide_id}.npy"
    np.save(out, coords)
    return out
