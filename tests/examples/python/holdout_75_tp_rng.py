# ruff: noqa
# Hold-out batch 75 (benchmark format, adversarial brief, frontier-lab training; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/16 (75%) at medium+.
"""Model-parallel CUDA RNG state tracking.

Tensor-parallel ranks must draw different dropout masks inside TP regions but
identical masks outside them, and activation recomputation has to replay the
exact stream it saw during the forward pass.
"""
import contextlib

import torch

_MODEL_PARALLEL_RNG = "model-parallel-rng"


class CudaRNGStatesTracker:
    def __init__(self):
        self._states = {}
        self._seeds = set()
        self._default_state = None

    def reset(self):
        self._states.clear()
        self._seeds.clear()

    def get_states(self):
        return {k: v.clone() for k, v in self._states.items()}

    def set_states(self, states):
        self._states = dict(states)

    def add(self, name, seed):
        if seed in self._seeds or name in self._states:
            raise RuntimeError(f"rng stream {name!r}/{seed} already registered")
        self._seeds.add(seed)
        orig = torch.cuda.get_rng_state()
        torch.cuda.manual_seed(seed)  # ok: MLS301
        self._states[name] = torch.cuda.get_rng_state()
        torch.cuda.set_rng_state(orig)  # ok: MLS301
        self._default_state = orig

    @contextlib.contextmanager
    def fork(self, name=_MODEL_PARALLEL_RNG):
        if name not in self._states:
            raise KeyError(f"unknown rng stream {name!r}")
        torch.cuda.set_rng_state(self._states[name])
        try:
            yield
        finally:
            self._states[name] = torch.cuda.get_rng_state()
            torch.cuda.set_rng_state(self._default_state)  # ruleid: MLS301


_TRACKER = CudaRNGStatesTracker()


def get_cuda_rng_tracker():
    return _TRACKER


def model_parallel_cuda_manual_seed(seed, tp_rank, pp_rank):
    """Called once at start-up, right after the process groups are built."""
    offset = seed + 2718 + 100 * pp_rank
    tp_seed = offset + tp_rank
    torch.cuda.manual_seed(offset)  # ok: MLS301
    _TRACKER.reset()
    _TRACKER.add(_MODEL_PARALLEL_RNG, tp_seed)
