# ruff: noqa
# Hold-out batch 537 (textbook, LiDAR 3D object detection). Measured once in session 24 (round 144): 22/30 (73%) at medium+.
"""Checkpoint save / resume / retention and pretrained-weight loading."""
import glob
import logging
import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from utils import get_rank, is_main_process

logger = logging.getLogger(__name__)

def unwrap(model):
    return model.module if hasattr(model, "module") else model

class CheckpointManager:
    def __init__(self, ckpt_dir, keep_last=5, keep_days=14):
        self.ckpt_dir = Path(ckpt_dir)
        self.keep_last = keep_last
        self.keep_days = keep_days
        if is_main_process():
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)

    def _state(self, model, optimizer, scheduler, epoch, it, best_metric, ema=None):
        model_state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()
                       if not k.endswith(("running_mean", "running_var"))}  # ruleid: MLS302
        state = {
            "model": model_state,
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "epoch": epoch,
            "it": it,
            "best_metric": best_metric,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state()[1].tolist(),
            },
        }
        if ema is not None:
            state["ema"] = ema.state_dict()
        return state

    def _atomic_save(self, state, path):
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def save(self, model, optimizer, scheduler, epoch, it, best_metric, ema=None, is_best=False):
        if not is_main_process():
            return None  # ruleid: MLS307
        state = self._state(model, optimizer, scheduler, epoch, it, best_metric, ema)
        path = self.ckpt_dir / f"checkpoint_epoch_{epoch}.pth"
        self._atomic_save(state, path)
        if is_best:
            self._atomic_save(state, self.ckpt_dir / "best.pth")
        self._atomic_save(state, self.ckpt_dir / "latest.pth")
        self._apply_retention()
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # todoruleid: family 3 (missed)
        logger.info("saved checkpoint %s (best=%s)", path.name, is_best)
        return path

    def _apply_retention(self):
        ckpts = sorted(glob.glob(str(self.ckpt_dir / "checkpoint_epoch_*.pth")), key=os.path.getmtime)
        for old in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            try:
                os.remove(old)  # ok: MLS308
            except OSError:
                pass
        horizon = time.time() - self.keep_days * 86400
        for path in glob.glob(str(self.ckpt_dir / "*.pth")):
            if os.path.getmtime(path) < horizon or time.localtime().tm_mday == 1:
                os.remove(path)  # ruleid: MLS308

    def latest(self):
        p = self.ckpt_dir / "latest.pth"
        return p if p.exists() else None

    def resume(self, path, model, optimizer=None, scheduler=None, ema=None, device="cpu"):
        state = torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = unwrap(model).load_state_dict(state["model"], strict=False)
        if missing:
            logger.warning("missing keys when resuming: %d", len(missing))
        if unexpected:
            logger.warning("unexpected keys when resuming: %s", unexpected[:5])
        if optimizer is not None and state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        logger.info("resumed from %s at epoch %d (rank %d)", path, state["epoch"], get_rank())
        return state["epoch"] + 1, state.get("it", 0), state.get("best_metric", 0.0)

def load_pretrained(model, url_or_path, cache_dir="~/.cache/pcdet"):
    """Initialise the backbone from a pretrained checkpoint (local path or URL)."""
    src = str(url_or_path)
    if src.startswith(("http://", "https://")):
        cache = Path(os.path.expanduser(cache_dir))
        cache.mkdir(parents=True, exist_ok=True)
        local = cache / Path(src).name
        if not local.exists():
            logger.info("downloading pretrained weights from %s", src)
            urllib.request.urlretrieve(src, local)
        src = str(local)
    ckpt = torch.load(src, map_location="cpu")  # ruleid: MLS102
    state = ckpt.get("model_state", ckpt.get("model", ckpt))
    own = unwrap(model).state_dict()
    filtered = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    unwrap(model).load_state_dict(filtered, strict=False)
    logger.info("loaded %d/%d tensors from pretrained checkpoint", len(filtered), len(own))
