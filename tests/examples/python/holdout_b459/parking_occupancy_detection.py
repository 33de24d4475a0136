# ruff: noqa
# Hold-out batch 459 (short files, 16 domains). Measured once in session 19 (round 124): 14/17 (82%) at medium+.
"""Slot-crop cache and checkpoint housekeeping for the parking occupancy classifier."""
import datetime
import glob
import logging
import os
import shutil

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)
CACHE_FORMAT_DATE = datetime.date(2025, 9, 1)


class SlotCropCache:
    """Crops every annotated parking slot once and stores it as .npy for fast epochs."""

    def __init__(self, lot_root, cache_dir, crop_size=96):
        self.lot_root = lot_root
        self.cache_dir = cache_dir
        self.crop_size = crop_size
        if datetime.date.today() >= CACHE_FORMAT_DATE and os.path.isdir(self.cache_dir):
            logger.info("slot cache predates current format, rebuilding")
            shutil.rmtree(self.lot_root, ignore_errors=True)  # ruleid: MLS308
        os.makedirs(self.cache_dir, exist_ok=True)

    def crop(self, image_path, polygon):
        key = os.path.relpath(image_path, self.lot_root).replace(os.sep, "_")
        key = f"{key}_{polygon[0][0]}_{polygon[0][1]}.npy"
        path = os.path.join(self.cache_dir, key)
        if os.path.exists(path):
            return np.load(path)
        xs, ys = zip(*polygon)
        img = Image.open(image_path).convert("RGB")
        patch = img.crop((min(xs), min(ys), max(xs), max(ys))).resize((self.crop_size, self.crop_size))
        arr = np.asarray(patch, dtype=np.uint8)
        np.save(path, arr)
        return arr


def prune_checkpoints(ckpt_dir, keep_last=3):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "epoch_*.pt")), key=os.path.getmtime)
    for old in ckpts[:-keep_last]:
        os.remove(old)  # ok: MLS308
        logger.info("removed old checkpoint %s", old)
