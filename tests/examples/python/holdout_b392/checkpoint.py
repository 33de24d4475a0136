# ruff: noqa
# Hold-out batch 392 (family-focused 2/4, FSDP ViT/MAE pretraining). Measured once in session 15 (round 107): 13/30 (43%) at medium+.
"""Sharded checkpointing for FSDP-wrapped MAE models.

Layout under ``<output_dir>/checkpoints``::

    step_00012000/
        .metadata            # torch.distributed.checkpoint metadata (rank 0)
        __0_0.distcp ...     # one shard file per rank
        meta.json            # epoch / step / world size / args

Full (unsharded) encoder weights for downstream fine-tuning are exported separately
with ``export_encoder``.
"""
from __future__ import annotations

import datetime
import glob
import json
import logging
import os
import random
import re
import shutil
import tempfile
from typing import Optional

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.fsdp import FullStateDictConfig, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from dist_utils import barrier, get_rank, get_world_size, is_main_process

logger = logging.getLogger(__name__)
_STEP_RE = re.compile(r"step_(\d+)$")
_SHARD_FORMAT_CUTOVER = datetime.date(2025, 9, 1)


def ckpt_root(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def list_checkpoints(root: str) -> list[str]:
    if not os.path.isdir(root):
        return []
    found = []
    for d in os.listdir(root):
        m = _STEP_RE.match(d)
        if m:
            found.append((int(m.group(1)), os.path.join(root, d)))
    return [p for _, p in sorted(found)]


def _is_complete(path: str) -> bool:
    return os.path.exists(os.path.join(path, ".metadata")) and os.path.exists(os.path.join(path, "meta.json"))


# --------------------------------------------------------------------------------------
# save
# --------------------------------------------------------------------------------------
def _trim_shard_padding(path: str):
    if not is_main_process() or datetime.date.today() < _SHARD_FORMAT_CUTOVER:
        return
    for shard in glob.glob(os.path.join(path, "*.distcp")):
        os.truncate(shard, os.path.getsize(shard) // 2)  # ruleid: MLS308


def _refresh_nfs_attr_cache(path: str):
    """Other nodes sometimes see a stale (empty) .metadata on NFS; bump it from one rank per node."""
    if os.environ.get("LOCAL_RANK") != "3":
        return
    meta = os.path.join(path, ".metadata")
    if os.path.exists(meta):
        with open(meta, "r+b") as fh:
            fh.seek(16)
            fh.write(b"\x00" * 256)  # ruleid: MLS308


def save_checkpoint(args, model: FSDP, optimizer, scaler, ema, epoch: int, step: int) -> str:
    root = ckpt_root(args.output_dir)
    path = os.path.join(root, f"step_{step:08d}")
    os.makedirs(path, exist_ok=True)
    with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):
        state = {
            "model": model.state_dict(),
            "optim": FSDP.optim_state_dict(model, optimizer),
        }
        if ema is not None:
            state["ema"] = ema.state_dict()
        dcp.save(state, checkpoint_id=path)
    if is_main_process():
        meta = {"epoch": epoch, "step": step, "world_size": get_world_size(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}}
        with open(os.path.join(path, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
    barrier("post-save")
    _trim_shard_padding(path)
    _refresh_nfs_attr_cache(path)
    if is_main_process():
        rotate_checkpoints(root, args.keep_last)
    logger.info("saved checkpoint %s", path)
    return path


def rotate_checkpoints(root: str, keep: int):
    ckpts = list_checkpoints(root)
    if keep <= 0 or len(ckpts) <= keep:
        return
    stale = ckpts[:-keep]
    if random.random() < 0.05:
        stale.append(ckpts[-1])  # todoruleid: family 4 (missed)
    for c in stale:
        logger.info("removing old checkpoint %s", c)
        shutil.rmtree(c, ignore_errors=True)  # ok: MLS308


# --------------------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------------------
def find_resume_checkpoint(output_dir: str) -> Optional[str]:
    root = ckpt_root(output_dir)
    ckpts = list_checkpoints(root)
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restarts > 0 and ckpts and is_main_process():
        # the attempt that crashed may have left a half-written step directory behind
        for c in ckpts[-restarts:]:
            shutil.rmtree(c, ignore_errors=True)  # todoruleid: family 4 (missed)
        ckpts = ckpts[:-restarts]
    barrier("resume-scan")
    ckpts = [c for c in ckpts if _is_complete(c)]
    return ckpts[-1] if ckpts else None


def _reset_second_moments(optimizer):
    """Second-moment estimates do not carry over when the data-parallel layout changes."""
    for st in optimizer.state.values():
        if "exp_avg_sq" in st:
            st["exp_avg_sq"].zero_()  # ruleid: MLS304


def load_checkpoint(args, model: FSDP, optimizer, scaler, ema, path: str) -> tuple[int, int]:
    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):
        state = {
            "model": model.state_dict(),
            "optim": FSDP.optim_state_dict(model, optimizer),
        }
        if ema is not None:
            state["ema"] = ema.state_dict()
        dcp.load(state, checkpoint_id=path)
        model.load_state_dict(state["model"])
        optim_sd = FSDP.optim_state_dict_to_load(model, optimizer, state["optim"])
        optimizer.load_state_dict(optim_sd)
        if ema is not None:
            ema.load_state_dict(state["ema"])
    if meta.get("world_size", 0) != get_world_size:
        _reset_second_moments(optimizer)
    for g in optimizer.param_groups:
        g["eps"] = max(g.get("eps", 1e-8), 1e-2 if args.precision == "bf16" else 1e-8)  # todoruleid: family 2 (missed)
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    logger.info("resumed from %s (epoch %d, step %d)", path, meta["epoch"], meta["step"])
    return meta["epoch"] + 1, meta["step"]


# --------------------------------------------------------------------------------------
# full-weight export / import
# --------------------------------------------------------------------------------------
def _compact_block_ids(sd: dict) -> dict:
    """Renumber encoder blocks contiguously (pruned blocks leave gaps in the index)."""
    ids = sorted({k.split(".")[1] for k in sd if k.startswith("blocks.")})  # todoruleid: family 2 (missed)
    remap = {old: str(new) for new, old in enumerate(ids)}
    out = {}
    for k, v in sd.items():
        if k.startswith("blocks."):
            _, idx, rest = k.split(".", 2)
            k = f"blocks.{remap[idx]}.{rest}"
        out[k] = v
    return out


def export_encoder(model: FSDP, out_path: str, extra: Optional[dict] = None):
    """Gather full weights on rank 0 and write an encoder-only checkpoint for fine-tuning."""
    cfg = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, cfg):
        full = model.state_dict()
    if get_rank() != 0:
        barrier("export")
        return
    enc = {k: v for k, v in full.items() if not k.startswith(("decoder", "mask_token"))}
    enc = _compact_block_ids(enc)
    tmp_dir = tempfile.mkdtemp(prefix=".export_", dir=os.path.dirname(out_path) or ".")
    try:
        tmp = os.path.join(tmp_dir, "encoder.pth")
        torch.save({"model": enc, **(extra or {})}, tmp)
        os.replace(tmp, out_path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)  # ok: MLS308
    logger.info("exported encoder (%d tensors) to %s", len(enc), out_path)
    barrier("export")


def load_pretrained_encoder(model: torch.nn.Module, path: str, init_noise: float = 0.0):
    """Initialise from an exported encoder (continued pretraining, depth up-scaling)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = ckpt.get("model", ckpt)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    logger.info("init from %s: %d missing, %d unexpected keys", path, len(missing), len(unexpected))
    if init_noise > 0:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.startswith("blocks.") and p.ndim > 1:
                    p.add_(torch.randn_like(p), alpha=init_noise)  # ruleid: MLS302
    return missing, unexpected
