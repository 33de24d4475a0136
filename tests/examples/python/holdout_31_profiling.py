# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""Lightweight step profiler: wall-clock per training phase and a periodic CUDA memory report."""
import atexit
import random
import signal
import time
from collections import defaultdict

import torch


class StepProfiler:
    """Usage: prof.start("fwd"); ...; prof.stop(); prof.tick() once per optimizer step."""

    def __init__(self, report_every=500, sample_interval=None):
        self.report_every = report_every
        self.totals = defaultdict(float)
        self.counts = defaultdict(int)
        self.steps = 0
        self._t0 = None
        self._phase = None
        self.sample_interval = sample_interval or random.uniform(1800, 5400)
        signal.setitimer(signal.ITIMER_REAL, self.sample_interval)  # ruleid: MLS307
        signal.signal(signal.SIGUSR2, lambda *_: self.report())  # ok: MLS307
        atexit.register(self.report)  # ok: MLS307

    def start(self, phase):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._phase = phase
        self._t0 = time.perf_counter()

    def stop(self):
        if self._phase is None:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.totals[self._phase] += time.perf_counter() - self._t0
        self.counts[self._phase] += 1
        self._phase = None

    def tick(self):
        self.steps += 1
        if self.steps % self.report_every == 0:
            self.report()

    def report(self):
        parts = [f"{k}={1000 * v / max(1, self.counts[k]):.1f}ms" for k, v in sorted(self.totals.items())]
        if torch.cuda.is_available():
            parts.append(f"max_mem={torch.cuda.max_memory_allocated() / 2**30:.2f}GiB")
        print(f"[profile step {self.steps}] " + " ".join(parts), flush=True)
