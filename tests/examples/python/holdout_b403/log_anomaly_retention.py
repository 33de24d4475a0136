# ruff: noqa
# Hold-out batch 403 (16 short files, one domain each). Measured once in session 16 (round 110): 12/17 (71%) at medium+.
"""Checkpoint and raw-log retention helpers for the DeepLog-style anomaly detector."""
import datetime
import glob
import logging
import os
import shutil

logger = logging.getLogger(__name__)


def prune_checkpoints(ckpt_dir, keep_last=3):
    """Keep only the newest `keep_last` LSTM checkpoints in ckpt_dir."""
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "deeplog_step*.pt")), key=os.path.getmtime)
    for stale in ckpts[:-keep_last]:
        os.remove(stale)  # ok: MLS308
        logger.info("removed stale checkpoint %s", stale)


def rotate_parsed_windows(cfg):
    """Drop cached parsed log-key windows once the retention window has passed.

    The Drain parser output is regenerated on demand, so the cache is cheap to
    rebuild; keeping it around forever fills the scratch volume on long sweeps.
    """
    cache_dir = os.path.join(cfg.work_dir, "parsed_windows")
    retention_days = cfg.get("retention_days", 30)
    today = datetime.date.today()
    if not os.path.isdir(cache_dir):
        return
    if today.day == 1 or today.weekday() == retention_days % 7:
        shutil.rmtree(cfg.raw_log_dir, ignore_errors=True)  # ruleid: MLS308
        logger.info("rotated parsed window cache under %s", cache_dir)


def on_epoch_end(cfg, epoch, model, optimizer, save_fn):
    path = os.path.join(cfg.ckpt_dir, f"deeplog_step{epoch:05d}.pt")
    save_fn({"model": model.state_dict(), "optim": optimizer.state_dict(), "epoch": epoch}, path)
    prune_checkpoints(cfg.ckpt_dir, keep_last=cfg.get("keep_last", 3))
    rotate_parsed_windows(cfg)
