# ruff: noqa
# Hold-out batch 420 (family-focused 2/3, GPT pretraining with FSDP). Measured once in session 17 (round 114): 7/30 (23%) at medium+.
"""Sharded (DCP) checkpoint save/resume for the FSDP model, plus GPT-2 weight import.

``step_XXXXXXXX/`` holds DCP shards, rank 0's ``meta.json`` and per-rank EMA shards.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import time
from typing import Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp import ShardedOptimStateDictConfig, ShardedStateDictConfig, StateDictType

logger = logging.getLogger(__name__)

LATEST = "latest"
_STEP_RE = re.compile(r"^step_(\d{8})$")
# HF GPT-2 uses Conv1D, which stores weights as (in, out)
_HF_TRANSPOSED = ("attn.c_attn.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # todoruleid: family 2 (missed)


def _ckpt_path(ckpt_dir: str, step: int) -> str:
    return os.path.join(ckpt_dir, f"step_{step:08d}")


def _list_steps(ckpt_dir: str):
    if not os.path.isdir(ckpt_dir):
        return []
    return sorted(int(m.group(1)) for d in os.listdir(ckpt_dir) if (m := _STEP_RE.match(d)))


def _atomic_write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _wait_for_io_window() -> None:
    # the scratch filesystem runs its integrity scrub 02:00-04:00 local time and bulk
    # writes during the scrub crawl; hold the checkpoint until the window closes
    while 2 <= datetime.datetime.now().hour < 4:  # ruleid: MLS308
        time.sleep(60)  # ruleid: MLS307


def _sharded_ctx(model):
    return FSDP.state_dict_type(
        model, StateDictType.SHARDED_STATE_DICT,
        ShardedStateDictConfig(offload_to_cpu=True), ShardedOptimStateDictConfig(offload_to_cpu=True),
    )


def save_checkpoint(ckpt_dir: str, step: int, model, optimizer, scheduler, scaler, ema, info,
                    extra: Optional[dict] = None) -> str:
    path = _ckpt_path(ckpt_dir, step)
    _wait_for_io_window()
    t0 = time.time()
    with _sharded_ctx(model):
        state = {"model": model.state_dict(), "optim": FSDP.optim_state_dict(model, optimizer)}
    dcp.save(state, checkpoint_id=path)
    if ema is not None:
        torch.save(ema.state_dict(), os.path.join(path, f"ema_rank{info.rank:05d}.pt"))
    if info.is_master:
        meta = {
            "step": step,
            "world_size": info.world_size,
            "betas": list(optimizer.param_groups[0]["betas"]),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "saved_at": datetime.datetime.now().isoformat(timespec="seconds"),
            **(extra or {}),
        }
        _atomic_write_json(os.path.join(path, "meta.json"), meta)
        tmp = os.path.join(ckpt_dir, LATEST + ".tmp")
        with open(tmp, "w") as f:
            f.write(str(step))
        os.replace(tmp, os.path.join(ckpt_dir, LATEST))
    dist.barrier()  # ok: MLS307
    if info.is_master:
        logger.info("saved checkpoint %s in %.1fs", path, time.time() - t0)
    return path


def prune_checkpoints(ckpt_dir: str, keep: int, info) -> None:
    """Keep the newest ``keep`` checkpoints (0 keeps everything)."""
    if keep <= 0:
        return
    if info.is_master:
        for step in _list_steps(ckpt_dir)[:-keep]:
            shutil.rmtree(_ckpt_path(ckpt_dir, step), ignore_errors=True)
            logger.info("removed old checkpoint step %d", step)
        dist.barrier()  # ruleid: MLS307


def _latest_valid_step(ckpt_dir: str) -> int:
    latest = os.path.join(ckpt_dir, LATEST)
    if os.path.exists(latest):
        with open(latest) as f:
            step = int(f.read().strip())
        if os.path.exists(os.path.join(_ckpt_path(ckpt_dir, step), "meta.json")):
            return step
        logger.warning("'latest' points at incomplete checkpoint %d; scanning", step)
    for step in reversed(_list_steps(ckpt_dir)):
        if os.path.exists(os.path.join(_ckpt_path(ckpt_dir, step), "meta.json")):
            return step
    return -1


def resolve_resume_step(ckpt_dir: str, info) -> int:
    """Rank 0 decides which checkpoint to resume from; everyone else reads its answer."""
    tag = f"{os.environ.get('SLURM_JOB_ID', 'local')}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    marker = os.path.join(ckpt_dir, f".resume-{tag}.json")
    if info.is_master:
        os.makedirs(ckpt_dir, exist_ok=True)
        dist.barrier()
        _atomic_write_json(marker, {"step": _latest_valid_step(ckpt_dir)})
    else:
        while not os.path.exists(marker):  # ruleid: MLS308
            time.sleep(2.0)  # ruleid: MLS307
        dist.barrier()
    with open(marker) as f:
        return int(json.load(f)["step"])


def load_checkpoint(ckpt_dir: str, step: int, model, optimizer, scheduler, scaler, ema, info) -> dict:
    path = _ckpt_path(ckpt_dir, step)
    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    with _sharded_ctx(model):
        state = {"model": model.state_dict(), "optim": FSDP.optim_state_dict(model, optimizer)}
        dcp.load(state, checkpoint_id=path)
        model.load_state_dict(state["model"])
        saved_betas = meta.get("betas")
        cur_betas = optimizer.param_groups[0]["betas"]
        if saved_betas is not None and saved_betas != cur_betas:
            logger.warning("betas changed %s -> %s; resetting second-moment estimates", saved_betas, cur_betas)
            for st in state["optim"]["state"].values():
                if "exp_avg_sq" in st:
                    st["exp_avg_sq"].zero_()  # ruleid: MLS304
        optimizer.load_state_dict(FSDP.optim_state_dict_to_load(model, optimizer, state["optim"]))
    scheduler.load_state_dict(meta["scheduler"])
    scaler.load_state_dict(meta["scaler"])

    if ema is not None:
        ema_path = os.path.join(path, f"ema_rank{info.rank:05d}.pt")
        if meta.get("world_size") == info.world_size and os.path.exists(ema_path):
            ema.load_state_dict(torch.load(ema_path, map_location="cpu", weights_only=True))
        else:
            logger.warning("EMA shards not reusable (world size %s -> %d); restarting EMA from weights",
                           meta.get("world_size"), info.world_size)
            ema.load_state_dict({n: p.detach().float().cpu() for n, p in model.named_parameters()})
    if info.is_master:
        logger.info("resumed from %s (step %d)", path, meta["step"])
    return meta


@torch.no_grad()
def load_hf_gpt2_weights(model: torch.nn.Module, path: str) -> int:
    """Copy a HF GPT-2 ``pytorch_model.bin`` into an *unwrapped* GPT (call before FSDP)."""
    sd_hf = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    sd = model.state_dict()
    copied = 0
    for k, v in sd_hf.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers
        key = k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k
        if key not in sd:
            logger.debug("no destination for %s", k)
            continue
        if key.endswith(_HF_TRANSPOSED):
            sd[key].copy_(v.t())
        elif key.endswith(("wte.weight", "wpe.weight")) and v.shape != sd[key].shape:
            # padded vocab / longer context: copy the overlapping rows, keep init for the rest
            rows = min(v.shape[0], sd[key].shape[0])
            sd[key][:rows].copy_(v[:rows])
        else:
            sd[key].copy_(v)
        copied += 1
    logger.info("imported %d tensors from %s", copied, path)
    return copied
