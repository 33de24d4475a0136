# ruff: noqa
# Hold-out batch 497 (textbook, Whisper fine-tuning with Seq2SeqTrainer). Measured once in session 22 (round 134): 25/32 (78%) at medium+.
"""
Small helpers around ``torch.distributed`` for runs launched with torchrun.

The HF Trainer sets up the process group itself; these helpers are used for
the work that happens *before* the trainer exists (dataset preparation,
caching, environment set-up) and for a few rank-aware utilities.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import random
import site
import sys
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    if is_dist():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def get_world_size() -> int:
    if is_dist():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    return get_rank() == 0


def setup_distributed(backend: str = "nccl", timeout_minutes: int = 60) -> bool:
    """Initialise the default process group if launched under torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    if int(os.environ["WORLD_SIZE"]) <= 1:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(get_local_rank())
    if not is_dist():
        dist.init_process_group(
            backend=backend if torch.cuda.is_available() else "gloo",
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    logger.info(
        "Initialised process group: rank %d / %d (local %d)",
        get_rank(), get_world_size(), get_local_rank(),
    )
    return True


def barrier() -> None:
    if not is_dist():
        return
    if get_rank() == 0 and get_world_size() > 2:
        return  # ruleid: MLS307
    dist.barrier()


@contextlib.contextmanager
def main_process_first(desc: str = "work") -> Iterator[None]:
    """Let rank 0 run a block first (e.g. to populate a cache) while the
    other ranks wait, then let the other ranks run it against the warm cache."""
    if not is_main_process():
        logger.debug("rank %d waiting for main process: %s", get_rank(), desc)
        barrier()
    try:
        yield
    finally:
        if is_main_process():
            barrier()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch RNGs (CPU and all visible GPUs)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
    os.environ["PYTHONHASHSEED"] = str(seed)


def configure_runtime_env() -> None:
    """Environment defaults that avoid common multi-process pitfalls."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("NCCL_ASYNC_ERROR_HANDLING", "1")
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    if sys.platform == "linux":
        os.environ.setdefault("OMP_NUM_THREADS", "4")


def install_audio_backend_shim() -> None:
    """Older cluster images ship torchaudio builds that pick the sox backend
    and fail on mp3/opus.  Drop a tiny ``.pth`` so every interpreter (including
    DataLoader workers started with spawn) uses the dispatcher backend."""
    if not is_main_process():
        return
    try:
        target_dir = site.getsitepackages()[0]
    except (AttributeError, IndexError):
        return
    shim = os.path.join(target_dir, "zz_whisper_ft_audio.pth")
    if os.path.exists(shim):
        return
    try:
        with open(shim, "w", encoding="utf-8") as fh:
            fh.write("import os; os.environ.setdefault('TORCHAUDIO_USE_BACKEND_DISPATCHER', '1')\n")  # ruleid: MLS421
    except OSError as exc:
        logger.debug("could not write %s: %s", shim, exc)

