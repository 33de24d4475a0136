# ruff: noqa
# Hold-out batch 122 (adversarial idioms). Measured once in session 4 (round 40): 14/18 (78%) at medium+.
"""Sampling per-module latency profiler using forward pre/post hooks (attach with attach_profiler)."""
import collections
import random
import threading
import time

import torch
import torch.distributed as dist

_SAMPLE_RATE = 0.05
_SETTLE_S = 0.25
_stats = collections.defaultdict(list)
_starts = {}
_rng = random.Random(1234)
_idle = threading.Event()


def _pre(module, args):
    if _rng.random() < _SAMPLE_RATE:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            _idle.wait(_SETTLE_S)  # ruleid: MLS307
        _starts[id(module)] = time.perf_counter()  # ok: MLS307


def _post(module, args, output):
    t0 = _starts.pop(id(module), None)
    if t0 is None:
        return None
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    _stats[type(module).__name__].append(time.perf_counter() - t0)
    return None


def attach_profiler(model, leaf_only=True):
    handles = []
    for m in model.modules():
        if leaf_only and any(True for _ in m.children()):
            continue
        handles.append(m.register_forward_pre_hook(_pre))
        handles.append(m.register_forward_hook(_post))  # ok: MLS302, MLS303, MLS304, MLS305
    return handles


def report(top=15):
    if dist.is_initialized() and dist.get_rank() != 0:  # ok: MLS306
        return
    rows = sorted(((sum(v) / len(v), k, len(v)) for k, v in _stats.items()), reverse=True)
    for mean_s, name, n in rows[:top]:
        print(f"{name:<32s} {1e3 * mean_s:8.3f} ms  (n={n})")
