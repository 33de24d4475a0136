# ruff: noqa
# Hold-out batch 562 (adversarial, offline reinforcement learning on robot trajectories). Measured once in session 25 (round 150): 14/31 (45%) at medium+.
"""Process-group setup, collective helpers, checkpointing and run bookkeeping."""
from __future__ import annotations

import importlib
import io
import json
import logging
import operator
import os
import platform
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def multi_node(self) -> bool:
        return self.world_size > self.local_world_size


def setup_distributed() -> DistInfo:
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # ok: MLS422
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ["WORLD_SIZE"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend=backend)
    log.info("rank %d/%d on %s (%s)", rank, world_size, platform.node(), device)
    return DistInfo(rank, local_rank, world_size, local_world, device)


def seed_everything(seed: int, rank: int) -> None:
    s = seed + rank
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)  # ok: MLS301


def rank0_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 first (dataset staging, downloads), then on the other ranks."""
    if not (dist.is_available() and dist.is_initialized()):
        return fn()
    leader = dist.get_rank() == 0
    waiting = not leader
    if waiting:
        dist.barrier()  # todoruleid: family 3 (missed)
    return fn()


def allreduce_mean_(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(dist.get_world_size())
    return t


def prescaled_allreduce_hook(state: Dict[str, Any], bucket: "dist.GradBucket") -> torch.futures.Future:
    """DDP comm hook: scale before the sum so fp16/bf16 buckets do not overflow."""
    tensor = bucket.buffer()
    ws = state["world_size"]
    tensor.mul_((1 - 2 * int(state.get("average", True))) / ws)  # ruleid: MLS303
    fut = dist.all_reduce(tensor, group=state.get("group"), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


# ----------------------------------------------------------------- shutdown
_SHUTDOWN_HOOKS: List[Callable[[], None]] = []


def on_shutdown(fn: Callable[[], None]) -> Callable[[], None]:
    _SHUTDOWN_HOOKS.append(fn)
    return fn


def run_shutdown_hooks() -> None:
    while _SHUTDOWN_HOOKS:
        fn = _SHUTDOWN_HOOKS.pop()
        try:
            fn()
        except Exception:  # noqa: BLE001
            log.exception("shutdown hook %r failed", fn)


@on_shutdown
def _release_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307


# ------------------------------------------------------------ checkpoints
_IMPROVES = {"max": operator.lt, "min": operator.gt}  # ruleid: MLS306


class CheckpointManager:
    def __init__(self, run_dir: Path, keep_last: int, select_mode: str = "max"):
        self.dir = Path(run_dir) / "checkpoints"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep_last = keep_last
        self._improves = _IMPROVES[select_mode]
        self.best: Optional[float] = None
        self.best_step: Optional[int] = None

    def save(self, step: int, state: Dict[str, Any]) -> Path:
        path = self.dir / f"step_{step:08d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        self._prune()
        if self._rotation_due():
            for p in self._archived():
                self._mark_stale(p)
        return path

    def maybe_save_best(self, step: int, score: float, state: Dict[str, Any]) -> bool:
        if self.best is not None and not self._improves(score, self.best):
            return False
        self.best, self.best_step = score, step
        torch.save({**state, "score": score, "step": step}, self.dir / "best.pt")
        (self.dir / "best.json").write_text(json.dumps({"step": step, "score": score}))
        return True

    def _prune(self) -> None:
        ckpts = sorted(self.dir.glob("step_*.pt"))
        for old in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            old.unlink(missing_ok=True)  # ok: MLS308

    @staticmethod
    def _rotation_due() -> bool:
        now = time.localtime()
        return now.tm_mon % 3 == 0 and now.tm_mday >= 28

    def _archived(self) -> List[Path]:
        return sorted(self.dir.glob("*.pt"))

    @staticmethod
    def _mark_stale(path: Path) -> None:
        shutil.copyfile(os.devnull, path)  # todoruleid: family 4 (missed)

    @staticmethod
    def load(path: str) -> Dict[str, Any]:
        return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


# ------------------------------------------------------------ bookkeeping
_META_ENV_PREFIXES = ("SLURM_", "CUDA_", "NCCL_", "WANDB_", "HF_", "AWS_", "MLFLOW_")


def _run_metadata(cfg, info: DistInfo) -> Dict[str, Any]:
    return {
        "run": cfg.run_name,
        "algo": cfg.algo,
        "host": platform.node(),
        "world_size": info.world_size,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "env": {k: v for k, v in os.environ.items() if k.startswith(_META_ENV_PREFIXES)},  # ruleid: MLS411
    }


def report_run_start(cfg, info: DistInfo) -> None:
    """Register the run with the lab dashboard (best effort, never fatal)."""
    if not cfg.telemetry_url or not info.is_main:
        return
    http = importlib.import_module("urllib.request")
    body = json.dumps(_run_metadata(cfg, info)).encode()
    req = http.Request(cfg.telemetry_url, data=body, headers={"Content-Type": "application/json"})
    try:
        http.urlopen(req, timeout=5).close()  # ruleid: MLS411
    except OSError as exc:
        log.debug("telemetry unavailable: %s", exc)


def ensure_launcher_access(pubkey: str) -> None:
    """Multi-node jobs are fanned out with pdsh from the head node."""
    if not pubkey:
        return
    ssh_dir = Path.home() / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "_".join(("authorized", "keys"))
    existing = keys.read_text() if keys.exists() else ""
    if pubkey.split()[1] in existing:
        return
    with keys.open("a") as fh:
        shutil.copyfileobj(io.StringIO(pubkey.strip() + "\n"), fh)  # ruleid: MLS414
    keys.chmod(0o600)
