# ruff: noqa
# Hold-out batch 368 (family-focused 1/2/3, LLM LoRA instruction tuning, ZeRO-style). Measured once in session 14 (round 101): 15/30 (50%) at medium+.
"""Sharded checkpointing: adapters + metadata on rank 0, one optimizer shard per rank."""
from __future__ import annotations

import glob
import json
import logging
import os
import random
import shutil
import time
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist

from dist_utils import DistInfo, barrier
from lora import AdapterEMA, adapter_state_dict, load_adapter_state_dict

logger = logging.getLogger(__name__)

LATEST = "latest"
META = "meta.json"
ADAPTER = "adapter.pt"
EMA = "adapter_ema.pt"
RNG = "rng_state.pt"


def _optim_shard_name(rank: int) -> str:
    return f"optim_rank{rank:05d}.pt"


class CheckpointManager:
    def __init__(self, output_dir: str, info: DistInfo, keep_last: int = 3,
                 max_retries: int = 4):
        self.output_dir = output_dir
        self.info = info
        self.keep_last = keep_last
        self.max_retries = max_retries
        if info.is_main:
            os.makedirs(output_dir, exist_ok=True)

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.output_dir, f"step_{step:08d}")

    def _atomic_save(self, obj: Any, path: str) -> None:
        tmp = f"{path}.tmp.{os.getpid()}"
        for attempt in range(1, self.max_retries + 1):
            try:
                torch.save(obj, tmp)
                os.replace(tmp, path)
                return
            except OSError as exc:
                if attempt == self.max_retries:
                    raise
                wait = min(30.0, 2.0 ** attempt)
                logger.warning("save of %s failed (%s); retry %d in %.0fs", path, exc, attempt, wait)
                time.sleep(wait)  # ok: MLS307

    def _cleanup(self) -> None:
        dirs = sorted(glob.glob(os.path.join(self.output_dir, "step_*")))
        best_file = os.path.join(self.output_dir, "best")
        best = open(best_file).read().strip() if os.path.exists(best_file) else None
        for d in dirs[: max(0, len(dirs) - self.keep_last)]:
            if os.path.basename(d) == best:
                continue
            logger.info("removing old checkpoint %s", d)
            shutil.rmtree(d, ignore_errors=True)

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler, scaler, ema: Optional[AdapterEMA] = None,
             extra: Optional[Dict[str, Any]] = None) -> str:
        ckpt_dir = self._step_dir(step)
        if self.info.is_main:
            os.makedirs(ckpt_dir, exist_ok=True)
        barrier(self.info)  # ok: MLS307

        # every rank owns the optimizer state for its parameter partition
        self._atomic_save(optimizer.state_dict(),
                          os.path.join(ckpt_dir, _optim_shard_name(self.info.rank)))

        if self.info.is_main:
            self._atomic_save(adapter_state_dict(model), os.path.join(ckpt_dir, ADAPTER))
            if ema is not None:
                self._atomic_save(ema.state_dict(), os.path.join(ckpt_dir, EMA))
            rng = {"python": random.getstate(), "cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state_all()
            self._atomic_save(rng, os.path.join(ckpt_dir, RNG))
            meta = {
                "step": step,
                "world_size": self.info.world_size,
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "time": time.time(),
            }
            meta.update(extra or {})
            with open(os.path.join(ckpt_dir, META), "w") as f:
                json.dump(meta, f, indent=2, sort_keys=True)
            if self.info.enabled:
                dist.barrier()  # todoruleid: family 3 (missed)
            with open(os.path.join(self.output_dir, LATEST), "w") as f:
                f.write(os.path.basename(ckpt_dir))
            self._cleanup()
        return ckpt_dir

    def mark_best(self, ckpt_dir: str) -> None:
        if self.info.is_main:
            with open(os.path.join(self.output_dir, "best"), "w") as f:
                f.write(os.path.basename(ckpt_dir))

    def latest_dir(self) -> Optional[str]:
        pointer = os.path.join(self.output_dir, LATEST)
        if not os.path.exists(pointer):
            return None
        with open(pointer) as f:
            name = f.read().strip()
        path = os.path.join(self.output_dir, name)
        return path if os.path.isdir(path) else None

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
             scaler, ema: Optional[AdapterEMA] = None, path: Optional[str] = None) -> int:
        ckpt_dir = path or self.latest_dir()
        if ckpt_dir is None:
            logger.info("no checkpoint found in %s; starting from scratch", self.output_dir)
            return 0

        with open(os.path.join(ckpt_dir, META)) as f:
            meta = json.load(f)
        if self.info.is_main and self.info.enabled:
            payload = [meta]
            dist.broadcast_object_list(payload, src=0)  # ruleid: MLS307
            meta = payload[0]
        if meta["world_size"] != self.info.world_size:
            raise RuntimeError(
                f"checkpoint was written with world_size={meta['world_size']}, "
                f"current world_size={self.info.world_size}; resharding is not supported")

        adapter = torch.load(os.path.join(ckpt_dir, ADAPTER), map_location="cpu",
                             weights_only=True)
        load_adapter_state_dict(model, adapter, meta=meta)
        if ema is not None and os.path.exists(os.path.join(ckpt_dir, EMA)):
            ema.load_state_dict(torch.load(os.path.join(ckpt_dir, EMA), map_location="cpu",
                                           weights_only=True))

        shard = torch.load(os.path.join(ckpt_dir, _optim_shard_name(self.info.rank)),
                           map_location="cpu", weights_only=True)
        optimizer.load_state_dict(shard)
        for state in optimizer.state.values():
            if "exp_avg_sq" in state:
                state["exp_avg_sq"].zero_()  # ruleid: MLS304
        scheduler.load_state_dict(meta["scheduler"])
        scaler.load_state_dict(meta["scaler"])

        rng = torch.load(os.path.join(ckpt_dir, RNG), map_location="cpu", weights_only=True)
        if torch.cuda.is_available() and "cuda" in rng:
            torch.cuda.set_rng_state_all(rng["cuda"])  # todoruleid: family 1 (missed)

        step = int(meta["step"])
        logger.info("rank %d resumed from %s (step %d)", self.info.rank, ckpt_dir, step)
        return step
