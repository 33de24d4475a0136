# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""CUDA RNG bookkeeping for tensor-parallel regions.

Dropout inside TP-sharded layers must differ across tensor-parallel ranks but
match across data-parallel replicas; outside TP regions the default generator
is used. The tracker keeps a named CUDA generator state per stream.
"""
import contextlib

import torch

_MODEL_PARALLEL_RNG_TRACKER_NAME = "model-parallel-rng"


class CudaRNGStatesTracker:
    def __init__(self):
        self.states_ = {}
        self.seeds_ = {}

    def reset(self):
        self.states_ = {}
        self.seeds_ = {}

    def get_states(self):
        return {k: v.clone() for k, v in self.states_.items()}

    def set_states(self, states):
        self.states_ = {k: v.clone() for k, v in states.items()}

    def add(self, name: str, seed: int) -> None:
        if seed in self.seeds_.values():
            raise RuntimeError(f"seed {seed} already exists")
        if name in self.states_:
            raise RuntimeError(f"cuda rng state {name} already exists")
        self.seeds_[name] = seed
        orig = torch.cuda.get_rng_state()
        torch.cuda.manual_seed(seed)  # ok: MLS301
        self.states_[name] = torch.cuda.get_rng_state()
        torch.cuda.set_rng_state(orig)  # ok: MLS301

    @contextlib.contextmanager
    def fork(self, name: str = _MODEL_PARALLEL_RNG_TRACKER_NAME):
        if name not in self.states_:
            raise KeyError(f"cuda rng state {name} is not added")
        orig = torch.cuda.get_rng_state()
        torch.cuda.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            torch.cuda.manual_seed(self.seeds_[name])  # ruleid: MLS301
            self.states_[name] = torch.cuda.get_rng_state()
            torch.cuda.set_rng_state(orig)


_CUDA_RNG_STATE_TRACKER = CudaRNGStatesTracker()


def get_cuda_rng_tracker() -> CudaRNGStatesTracker:
    return _CUDA_RNG_STATE_TRACKER


def model_parallel_cuda_manual_seed(seed: int, tp_rank: int) -> None:
    """Called once at init: DP-shared default stream, TP-distinct tracked stream."""
    tensor_model_parallel_seed = seed + 2718 + tp_rank
    torch.cuda.manual_seed(seed)  # ok: MLS301
    _CUDA_RNG_STATE_TRACKER.reset()
    _CUDA_RNG_STATE_TRACKER.add(_MODEL_PARALLEL_RNG_TRACKER_NAME, tensor_model_parallel_seed)
