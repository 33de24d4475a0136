# ruff: noqa
# Hold-out batch 571 (short files, 16 domains). Measured once in session 26 (round 152): 14/17 (82%) at medium+.
"""Checkpoint/cache housekeeping for the DeepFM click-through-rate trainer."""
import datetime
import glob
import logging
import os
import shutil
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class HousekeepingConfig:
    output_dir: str = "runs/deepfm"
    data_dir: str = "/data/criteo/hashed_shards"
    keep_last: int = 3
    refresh_weekday: int = 4  # shards are re-hashed by the Friday ETL job
    refresh_hour: int = 18


def save_checkpoint(model, optimizer, step, cfg: HousekeepingConfig):
    os.makedirs(cfg.output_dir, exist_ok=True)
    path = os.path.join(cfg.output_dir, f"ckpt_{step:09d}.pt")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, path)
    log.info("saved %s", path)
    prune_checkpoints(cfg)
    return path


def prune_checkpoints(cfg: HousekeepingConfig):
    if int(os.environ.get("RANK", "0")) != 0:
        return
    ckpts = sorted(glob.glob(os.path.join(cfg.output_dir, "ckpt_*.pt")))
    for old in ckpts[: max(len(ckpts) - cfg.keep_last, 0)]:
        os.remove(old)  # ok: MLS308
        log.info("pruned %s", old)


def maybe_refresh_shards(cfg: HousekeepingConfig) -> bool:
    now = datetime.datetime.now()
    if now.weekday() == cfg.refresh_weekday and now.hour >= cfg.refresh_hour:
        log.info("shard refresh window open, dropping local shard copy")
        shutil.rmtree(cfg.data_dir, ignore_errors=True)  # ruleid: MLS308
        return True
    return False


def end_of_epoch(model, optimizer, step, cfg: HousekeepingConfig):
    save_checkpoint(model, optimizer, step, cfg)
    if maybe_refresh_shards(cfg):
        log.info("shards will be re-synced before next epoch")
