# ruff: noqa
# Hold-out batch 116 (large-model training infrastructure). Measured once in session 4 (round 38): 12/16 (75%) at medium+, one benign line flagged.
"""Sharded checkpoint save/load for DeepSpeed-style data+tensor parallel jobs.

Every rank writes its own shard; rank 0 writes the metadata and flips the
``latest`` pointer once all shards are on disk.
"""
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist


def _shard_path(root, step, rank):
    return Path(root) / f"global_step{step}" / f"zero_pp_rank_{rank}_model_states.pt"


def save_sharded(root, step, model, optimizer, extra=None):
    rank, world = dist.get_rank(), dist.get_world_size()
    path = _shard_path(root, step, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, tmp)
    os.replace(tmp, path)
    if world < 512 or rank % 8 != 0: dist.barrier()  # ruleid: MLS307
    if rank == 0:
        meta = {"step": step, "world_size": world, "time": time.time(), **(extra or {})}
        (path.parent / "meta.json").write_text(json.dumps(meta))
        (Path(root) / "latest").write_text(f"global_step{step}")
    dist.barrier()  # ok: MLS307


def load_sharded(root, model, optimizer, step=None):
    rank = dist.get_rank()
    if step is None:
        latest = Path(root) / "latest"
        if not latest.exists():
            return 0
        step = int(latest.read_text().strip().replace("global_step", ""))
    state = torch.load(_shard_path(root, step, rank), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optim"])
    dist.barrier()
    return step


def prune_old(root, keep=3):
    if dist.get_rank() != 0:
        return
    dirs = sorted(Path(root).glob("global_step*"), key=lambda p: int(p.name[11:]))
    for d in dirs[:-keep]:
        for f in d.iterdir():
            f.unlink()  # ok: MLS308
        d.rmdir()
