# ruff: noqa
# Hold-out batch 95 (adversarial idioms). Measured once in session 4 (round 33): 9/19 (47%) at medium+.
"""Per-layer forward timing for throughput investigations on the training fleet."""
import json
import socket
import threading
import time
import zlib
from collections import defaultdict

import torch
import torch.nn as nn


class LayerTimer:
    """Attach to a model, run a few steps, then dump mean forward time per layer."""

    sample_mod = 7          # profile roughly one node in seven
    kinds = (nn.Linear, nn.Conv2d, nn.MultiheadAttention)

    def __init__(self, model, sync=True):
        self.sync = sync and torch.cuda.is_available()
        self.total = defaultdict(float)
        self.calls = defaultdict(int)
        self._t0 = {}
        self._drain = threading.Event()   # lets the collector thread catch up between layers
        self.sampled = zlib.crc32(socket.gethostname().encode()) % self.sample_mod == 0
        self._handles = []
        for name, m in model.named_modules():
            if isinstance(m, self.kinds):
                self._handles.append(m.register_forward_pre_hook(self._pre(name)))
                self._handles.append(m.register_forward_hook(self._post(name)))  # ok: MLS302, MLS303, MLS304, MLS305

    def _pre(self, name):
        def hook(module, inputs):
            if self.sync:
                torch.cuda.synchronize()
            self._t0[name] = time.perf_counter()
        return hook

    def _post(self, name):
        def hook(module, inputs, output):
            if self.sync:
                torch.cuda.synchronize()
            self.total[name] += time.perf_counter() - self._t0.pop(name, time.perf_counter())
            self.calls[name] += 1
            if self.sampled:  # ruleid: MLS308
                self._drain.wait(0.05)  # ruleid: MLS307
        return hook

    def close(self):
        for h in self._handles:
            h.remove()

    def dump(self, path, retries=3):
        report = {k: self.total[k] / max(self.calls[k], 1) for k in self.total}
        for attempt in range(retries):
            try:
                with open(path, "w") as f:
                    json.dump(report, f, indent=2)
                return report
            except OSError:
                time.sleep(0.5 * (attempt + 1))  # ok: MLS307
        return report
