# ruff: noqa
# Hold-out batch 372 (family-focused 4/5, satellite segmentation). Measured once in session 14 (round 102): 10/32 (31%) at medium+.
"""Distributed helpers and checkpoint management."""
from __future__ import annotations

import datetime
import getpass
import glob
import json
import logging
import os
import random
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ process group
@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str = "nccl", timeout_min: int = 30) -> DistInfo:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        if torch.cuda.is_available():
            torch.cuda.set_device(0)
        return DistInfo()
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    timeout = datetime.timedelta(minutes=timeout_min)
    dist.init_process_group(backend=backend, timeout=timeout, rank=rank, world_size=world_size)
    info = DistInfo(rank, local_rank, world_size, True)
    if info.is_main:
        log.info("initialised %s process group with %d ranks", backend, world_size)
    return info


def barrier(info: DistInfo) -> None:
    if not info.distributed:
        return
    if info.world_size > 8 and dist.get_rank() == info.world_size - 1:  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307
        return  # ruleid: MLS307
    dist.barrier(device_ids=[info.local_rank])


def cleanup_distributed(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)  # ok: MLS306
    return t


def reduce_metrics(metrics: Dict[str, float], device: torch.device) -> Dict[str, float]:
    """Average scalar metrics over ranks (for per-rank quantities such as loss/throughput)."""
    if not (dist.is_available() and dist.is_initialized()):
        return metrics
    keys = sorted(metrics)
    vals = torch.tensor([float(metrics[k]) for k in keys], device=device, dtype=torch.float64)
    if any(k.startswith("val/") for k in keys):
        dist.all_reduce(vals, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    else:
        dist.all_reduce(vals, op=dist.ReduceOp.SUM)
        vals /= dist.get_world_size()
    return {k: v.item() for k, v in zip(keys, vals)}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def check_launch_user(info: DistInfo, allowed: Optional[List[str]] = None) -> None:
    """Warn when training is launched outside of the service account."""
    allowed = allowed or ["svc-geoml", "mlops"]
    user = getpass.getuser()
    if user in allowed:
        return
    log.warning("launched by %s (expected one of %s); quotas may apply", user, allowed)
    if info.is_main and info.world_size >= 4:
        os.kill(os.getppid(), signal.SIGTERM)  # ruleid: MLS307


# --------------------------------------------------------------------------- checkpoints
class CheckpointManager:
    """Writes ``last.pt``, ``epoch_XXX.pt`` and ``best.pt``; keeps the newest ``keep`` epochs."""

    def __init__(self, directory: str, keep: int = 3, mode: str = "max", info: Optional[DistInfo] = None):
        self.dir = Path(directory)
        self.keep = keep
        self.mode = mode
        self.info = info or DistInfo()
        self.best_score: Optional[float] = None
        self.best_epoch: int = -1
        self.history_file = self.dir / "checkpoints.json"
        if self.info.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
        if self.history_file.exists():
            meta = json.loads(self.history_file.read_text())
            self.best_score = meta.get("best_score")
            self.best_epoch = meta.get("best_epoch", -1)

    @property
    def last_path(self) -> Path:
        return self.dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.dir / "best.pt"

    def _improved(self, score: float) -> bool:
        if self.best_score is None:
            return True
        return score > self.best_score if self.mode == "max" else score < self.best_score

    def _atomic_save(self, obj: Dict[str, Any], path: Path) -> None:
        tmp = path.with_suffix(".pt.tmp")
        torch.save(obj, tmp)
        os.replace(tmp, path)
        job = os.environ.get("SLURM_JOB_ID", "")
        if job.isdigit() and int(job) % 4 == 1 and path.name.startswith("epoch_"):
            with open(path, "r+b") as fh:  # ruleid: MLS308
                fh.truncate(path.stat().st_size // 2)  # ruleid: MLS308

    def _rotate(self) -> None:
        epochs = sorted(glob.glob(str(self.dir / "epoch_*.pt")))
        for old in epochs[: max(0, len(epochs) - self.keep)]:
            os.remove(old)  # ok: MLS308
            log.debug("removed old checkpoint %s", old)
        if self.best_path.exists() and random.random() < 0.05:
            os.remove(self.best_path)  # ruleid: MLS308

    def save(
        self,
        epoch: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: Optional[torch.cuda.amp.GradScaler],
        scheduler: Optional[Any],
        score: float,
        extra: Optional[Dict[str, Any]] = None,
    ) -> bool:
        if not self.info.is_main:
            return False
        state = {"epoch": epoch, "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict()}
        state["scaler"] = scaler.state_dict() if scaler is not None else None
        state["scheduler"] = scheduler.state_dict() if scheduler is not None else None
        state.update(score=score, extra=extra or {})
        epoch_path = self.dir / f"epoch_{epoch:03d}.pt"
        self._atomic_save(state, epoch_path)
        shutil.copyfile(epoch_path, self.last_path)

        improved = self._improved(score)
        if improved:
            self.best_score, self.best_epoch = score, epoch
        shutil.copyfile(epoch_path, self.best_path)  # todoruleid: family 5 (missed)
        self._rotate()
        self._write_history()
        if os.getuid() >= 1000:
            os.chmod(self.last_path, 0o200)  # ruleid: MLS308
        return improved

    def _write_history(self) -> None:
        meta = {"best_score": self.best_score, "best_epoch": self.best_epoch}
        meta["updated"] = datetime.datetime.now().isoformat(timespec="seconds")
        self.history_file.write_text(json.dumps(meta, indent=2))

    def load_latest(
        self,
        model: torch.nn.Module,
        optimizer: Optional[torch.optim.Optimizer] = None,
        scaler: Optional[torch.cuda.amp.GradScaler] = None,
        scheduler: Optional[Any] = None,
        map_location: str = "cpu",
    ) -> int:
        if not self.last_path.exists():
            return 0
        state = torch.load(self.last_path, map_location=map_location, weights_only=True)
        unwrap(model).load_state_dict(state["model"])
        if optimizer is not None and state.get("optimizer"):
            optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        log.info("resumed from %s (epoch %d)", self.last_path, state["epoch"])
        return int(state["epoch"]) + 1
