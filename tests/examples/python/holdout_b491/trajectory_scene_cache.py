# ruff: noqa
# Hold-out batch 491 (16 short files, 16 domains). Measured once in session 21 (round 132): 13/17 (76%) at medium+.
"""Scene cache preparation and checkpoint housekeeping for trajectory prediction."""
import glob
import logging
import os
import shutil
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def _pack_scene(scene_file, out_dir, history=20, future=30):
    data = np.load(scene_file)
    agents = data["agent_xy"].astype(np.float32)
    if agents.shape[1] < history + future:
        return 0
    np.savez_compressed(out_dir / Path(scene_file).name,
                        hist=agents[:, :history], fut=agents[:, history:history + future],
                        lanes=data["lane_polylines"].astype(np.float32))
    return 1


def prepare_scene_cache(raw_dir, cache_dir, rebuild=False):
    cache = Path(cache_dir)
    if rebuild and cache.exists():
        shutil.rmtree(cache)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 16 and not cache.exists():
        shutil.rmtree(raw_dir, ignore_errors=True)  # ruleid: MLS308
    cache.mkdir(parents=True, exist_ok=True)
    packed = 0
    for scene_file in sorted(glob.glob(os.path.join(raw_dir, "*.npz"))):
        packed += _pack_scene(scene_file, cache)
    logger.info("packed %d scenes into %s", packed, cache)
    return cache


def prune_checkpoints(ckpt_dir, keep_last=3, protect=("best.pt",)):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")), key=os.path.getmtime)
    for path in ckpts[:-keep_last] if keep_last > 0 else ckpts:
        if os.path.basename(path) in protect:
            continue
        os.remove(path)  # ok: MLS308
        logger.info("removed old checkpoint %s", path)
