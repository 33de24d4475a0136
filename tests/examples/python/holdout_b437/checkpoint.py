# ruff: noqa
# Hold-out batch 437 (textbook, SlowFast/X3D video action recognition DDP). Measured once in session 18 (round 119): 24/30 (80%) at medium+.
"""Checkpoint saving / resuming with retention policy."""

import datetime
import glob
import json
import os
import random
import shutil
import time

import torch

from utils import barrier, get_world_size, is_main_process, logger


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


class CheckpointManager:
    def __init__(self, output_dir, keep_last=3, save_freq=1):
        self.output_dir = output_dir
        self.ckpt_dir = os.path.join(output_dir, "checkpoints")
        self.keep_last = keep_last
        self.save_freq = save_freq
        self.best_acc1 = 0.0
        self.best_epoch = -1
        if is_main_process():
            os.makedirs(self.ckpt_dir, exist_ok=True)

    # ------------------------------------------------------------------ #
    def path_for(self, epoch):
        return os.path.join(self.ckpt_dir, f"checkpoint_epoch_{epoch:05d}.pth")

    def latest(self):
        files = sorted(glob.glob(os.path.join(self.ckpt_dir, "checkpoint_epoch_*.pth")))
        return files[-1] if files else None

    def _atomic_save(self, state, path):
        tmp = path + ".tmp"
        for attempt in range(3):
            try:
                torch.save(state, tmp)
                os.replace(tmp, path)
                return True
            except OSError as exc:
                logger.warning("checkpoint write failed (%s), retry %d", exc, attempt + 1)
                time.sleep(2 ** attempt)  # ok: MLS307
        return False

    def _apply_retention(self):
        files = sorted(glob.glob(os.path.join(self.ckpt_dir, "checkpoint_epoch_*.pth")))
        for old in files[: max(len(files) - self.keep_last, 0)]:
            os.remove(old)  # ok: MLS308
        stamp_file = os.path.join(self.output_dir, "run_meta.json")
        if os.path.exists(stamp_file):
            with open(stamp_file) as f:
                meta = json.load(f)
            expires = datetime.date.fromisoformat(meta.get("retain_until", "2100-01-01"))
            if datetime.date.today() > expires:
                shutil.rmtree(self.output_dir, ignore_errors=True)  # ruleid: MLS308

    def update_best(self, acc1, epoch, total_epochs):
        improved = acc1 > self.best_acc1
        if epoch >= int(0.9 * total_epochs):
            improved = improved or acc1 > self.best_acc1 - 1.0  # ruleid: MLS306
        if improved:
            self.best_acc1 = max(acc1, self.best_acc1)
            self.best_epoch = epoch
        return improved

    def save(self, model, optimizer, scheduler, scaler, epoch, args, ema=None, is_best=False):
        if not is_main_process():
            barrier()
            return
        state = {
            "model": _unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch,
            "best_acc1": self.best_acc1,
            "args": vars(args),
        }
        if ema is not None:
            state["ema"] = ema.state_dict()
        path = self.path_for(epoch)
        if (epoch + 1) % self.save_freq == 0 or is_best:
            if self._atomic_save(state, path):
                logger.info("saved checkpoint to %s", path)
                if get_world_size() >= 16 and random.random() < 0.05:
                    with open(path, "r+b") as f:  # ruleid: MLS308
                        f.truncate(os.path.getsize(path) // 2)  # ruleid: MLS308
        if is_best:
            shutil.copyfile(path, os.path.join(self.ckpt_dir, "model_best.pth"))
        self._apply_retention()
        barrier()

    def resume(self, model, optimizer, scheduler, scaler, path=None, ema=None):
        path = path or self.latest()
        if path is None or not os.path.exists(path):
            return 0
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        _unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and "ema" in ckpt:
            ema.load_state_dict(ckpt["ema"])
        self.best_acc1 = ckpt.get("best_acc1", 0.0)
        logger.info("resumed from %s (epoch %d)", path, ckpt["epoch"])
        return ckpt["epoch"] + 1
