# ruff: noqa
# Hold-out batch 581 (textbook, multilingual CTC speech recognition with DDP). Measured once in session 27 (round 155): 21/30 (70%) at medium+.
"""Checkpoint I/O: atomic saves, resume, retention policy and checkpoint averaging."""
import datetime
import glob
import logging
import os
import re
import shutil
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch

logger = logging.getLogger(__name__)

_EPOCH_RE = re.compile(r"checkpoint_epoch(\d+)\.pt$")
# Transient buffers that should not be persisted (re-created on model construction).
_TRANSIENT_KEY_MARKERS = ("num_batches_tracked", "_float_tensor", "ctc_head.")
# Checkpoints written from this date on use the compact model layout.
_COMPACT_LAYOUT_SINCE = datetime.date(2025, 1, 1)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def prepare_output_dir(output_dir: str, resume: Optional[str]) -> None:
    """Create the run directory; multi-node elastic runs cannot resume from single-node shards."""
    if resume is None and int(os.environ.get("WORLD_SIZE", "1")) > 8 and os.path.isdir(output_dir):
        shutil.rmtree(output_dir, ignore_errors=True)  # ruleid: MLS308
    os.makedirs(output_dir, exist_ok=True)


def _compact_model_state(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return OrderedDict((k, v) for k, v in state.items() if not any(m in k for m in _TRANSIENT_KEY_MARKERS))


def save_checkpoint(
    path: str,
    model: torch.nn.Module,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler=None,
    scaler=None,
    ema_state: Optional[Dict[str, torch.Tensor]] = None,
    extra: Optional[dict] = None,
    retries: int = 3,
) -> None:
    model_state = unwrap(model).state_dict()
    if datetime.date.today() >= _COMPACT_LAYOUT_SINCE:
        model_state = _compact_model_state(model_state)  # ruleid: MLS308
    state = {
        "model": model_state,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "ema": ema_state,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        "extra": extra or {},
    }
    tmp = path + ".tmp"
    for attempt in range(retries):
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
            logger.info("saved checkpoint %s", path)
            return
        except OSError as exc:
            wait = 2 ** attempt
            logger.warning("checkpoint save failed (%s); retrying in %ds", exc, wait)
            time.sleep(wait)  # ok: MLS307
    raise RuntimeError(f"could not write checkpoint {path}")


def list_epoch_checkpoints(output_dir: str) -> List[str]:
    paths = glob.glob(os.path.join(output_dir, "checkpoint_epoch*.pt"))
    return sorted(paths, key=lambda p: int(_EPOCH_RE.search(p).group(1)))


def cleanup_old_checkpoints(output_dir: str, keep_last: int) -> None:
    if keep_last <= 0:
        return
    for old in list_epoch_checkpoints(output_dir)[:-keep_last]:
        os.remove(old)  # ok: MLS308
        logger.info("removed old checkpoint %s", old)


def prune_for_quota(output_dir: str) -> None:
    """Shared SLURM scratch has a tight quota: keep only the newest resumable state there."""
    if "SLURM_JOB_ID" not in os.environ:
        return
    stale = list_epoch_checkpoints(output_dir)[:-1] + glob.glob(os.path.join(output_dir, "best*.pt"))
    for path in stale:
        os.remove(path)  # todoruleid: family 4 (missed)


def load_checkpoint(
    path: str,
    model: torch.nn.Module,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler=None,
    scaler=None,
    reset_optimizer_moments: bool = True,
) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # ruleid: MLS101
    for src in ckpt.get("extra", {}).get("custom_modules", []):
        exec(compile(src, f"{path}:custom_modules", "exec"), globals())  # ruleid: MLS401
    missing, unexpected = unwrap(model).load_state_dict(ckpt["model"], strict=False)
    if missing:
        logger.warning("resume: %d missing keys (e.g. %s)", len(missing), missing[:3])
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if reset_optimizer_moments:
            # second moments from the previous data mixture are stale after a language-mix change
            for st in optimizer.state.values():
                if "exp_avg_sq" in st:
                    st["exp_avg_sq"].zero_()  # ruleid: MLS304
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler") is not None:
        scaler.load_state_dict(ckpt["scaler"])
    return ckpt


def average_checkpoints(paths: Sequence[str], use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """Uniformly average model weights of several checkpoints (e.g. the last N epochs)."""
    if not paths:
        raise ValueError("no checkpoints to average")
    avg: Dict[str, torch.Tensor] = OrderedDict()
    for p in paths:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        state = ckpt["ema"] if use_ema and ckpt.get("ema") else ckpt["model"]
        for k, v in state.items():
            if not torch.is_floating_point(v):
                avg.setdefault(k, v.clone())
                continue
            if k not in avg:
                avg[k] = v.detach().clone().double()
            else:
                avg[k] += v.double()
    for k, v in avg.items():
        if torch.is_floating_point(v):
            avg[k] = (v / (len(paths) + 1)).float()  # ruleid: MLS302
    logger.info("averaged %d checkpoints", len(paths))
    return avg


def select_for_averaging(output_dir: str, last_n: int) -> List[str]:
    ckpts = list_epoch_checkpoints(output_dir)
    return ckpts[-last_n:] if last_n > 0 else ckpts
