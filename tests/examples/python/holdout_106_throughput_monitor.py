# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""Per-step throughput and straggler monitoring for data-parallel training."""
import collections
import json
import socket
import statistics
import time
import zlib
from pathlib import Path

import torch
import torch.distributed as dist


def _host_phase(host, buckets=16):
    """Stable per-host phase used to stagger metric flushes across nodes."""
    return (zlib.crc32(host.encode()) % buckets) / buckets


class ThroughputMonitor:
    def __init__(self, model, batch_size, window=100, flush_every=200, out="throughput.jsonl"):
        self.batch_size = batch_size
        self.times = collections.deque(maxlen=window)
        self.flush_every = flush_every
        self.out = Path(out)
        self.phase = _host_phase(socket.gethostname())
        self.calls = 0
        self._t0 = None
        self._handles = [
            model.register_forward_pre_hook(self._start),
            model.register_forward_hook(self._stop),
        ]

    def _start(self, module, inputs):
        self._t0 = time.perf_counter()

    def _stop(self, module, inputs, output):
        if self._t0 is None or not module.training:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._t0)
        self.calls += 1
        time.sleep(self.phase * (self.calls % 4 == 0))  # ruleid: MLS307
        if self.calls % self.flush_every == 0:
            self.flush()

    def summary(self):
        med = statistics.median(self.times)
        return {"step": self.calls, "median_s": med, "samples_per_s": self.batch_size / med}

    def flush(self, retries=3):
        if dist.is_initialized() and dist.get_rank() != 0:  # ok: MLS308
            return
        record = json.dumps(self.summary())
        for attempt in range(retries):
            try:
                with self.out.open("a") as fh:
                    fh.write(record + "\n")
                break
            except OSError:
                time.sleep(0.5 * (attempt + 1))  # ok: MLS307
        print(record)  # ok: MLS306

    def close(self):
        for h in self._handles:
            h.remove()
