# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""Reproducibility helpers: global seeding, DataLoader worker seeding, RNG state save/restore, weight loading."""
import os
import random

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return g


def loader_kwargs(seed: int, num_workers: int = 4) -> dict:
    return dict(num_workers=num_workers, worker_init_fn=seed_worker, generator=make_generator(seed),
                persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available())


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Called once when resuming from a checkpoint, before the first batch."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])  # ok: MLS301
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_weights(model: torch.nn.Module, path: str, strict: bool = True) -> torch.nn.Module:
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state.get("model", state), strict=strict)
    return model
