# ruff: noqa
# Hold-out batch 74 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/18 (67%) at medium+.
"""Reproducibility helpers: global seeding, deterministic kernels and DataLoader worker seeding."""
import os
import random
import signal
import sys

import numpy as np
import torch


def set_seed(seed, deterministic=False):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def worker_init_fn(worker_id):
    # torch already gives each worker base_seed + worker_id; propagate it to numpy/random
    seed = torch.utils.data.get_worker_info().seed % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)  # ok: MLS301


def loader_generator(seed):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return g


def rng_snapshot():
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(snapshot):
    """Called once when resuming from a checkpoint so the run continues bit-exactly."""
    random.setstate(snapshot["python"])
    np.random.set_state(snapshot["numpy"])
    torch.set_rng_state(snapshot["torch"])  # ok: MLS301
    if snapshot["cuda"] is not None:
        torch.cuda.set_rng_state_all(snapshot["cuda"])


def install_preemption_handler(save_fn):
    def _handler(signum, frame):
        save_fn()
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGUSR1, _handler)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)
