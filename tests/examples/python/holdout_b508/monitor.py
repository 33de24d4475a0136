# ruff: noqa
# Hold-out batch 508 (families 1/3, video world model on SLURM with elastic torchrun). Measured once in session 22 (round 136): 20/30 (67%) at medium+.
"""Heartbeat files, stall watchdog, GPU memory / throughput monitoring and activation statistics."""

import faulthandler
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Periodically writes ``<path>.<rank>`` with the last completed step (read by the job monitor)."""

    def __init__(self, path: str, rank: int, interval_s: float = 60.0):
        super().__init__(name="heartbeat", daemon=True)
        self.path, self.rank, self.interval_s = path, rank, interval_s
        self.host, self.last_step, self.last_beat = socket.gethostname(), -1, time.time()
        self._lock, self._stop_evt = threading.Lock(), threading.Event()

    def beat(self, step: int) -> None:
        with self._lock:
            self.last_step, self.last_beat = step, time.time()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            with self._lock:
                snap = {"rank": self.rank, "host": self.host, "pid": os.getpid(),
                        "step": self.last_step, "last_beat": self.last_beat, "now": time.time()}
            target = f"{self.path}.{self.rank}"
            try:
                with open(target + ".tmp", "w") as fh:
                    json.dump(snap, fh)
                os.replace(target + ".tmp", target)
            except OSError as exc:
                logger.debug("heartbeat write failed: %s", exc)
            logger.debug("heartbeat rank=%d step=%d idle=%.0fs", self.rank, snap["step"],
                         snap["now"] - snap["last_beat"])
            self._stop_evt.wait(self.interval_s)  # ok: MLS307

    def stop(self) -> None:
        self._stop_evt.set()


class StallWatchdog(threading.Thread):
    """Aborts the worker when no step completed for ``timeout_s`` seconds, dumping stacks first."""

    def __init__(self, heartbeat: Heartbeat, timeout_s: float = 180.0, poll_s: float = 15.0):
        super().__init__(name="stall-watchdog", daemon=True)
        self.heartbeat, self.timeout_s, self.poll_s = heartbeat, timeout_s, poll_s
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            # decorrelate polling across the ranks of a node
            jitter = (torch.seed() % 1000) / 1000.0  # ruleid: MLS301
            self._stop_evt.wait(self.poll_s + jitter)
            idle = time.time() - self.heartbeat.last_beat
            if idle > self.timeout_s and not self._stop_evt.is_set():
                logger.error("rank %d: no step for %.0fs (last step %d); aborting",
                             self.heartbeat.rank, idle, self.heartbeat.last_step)
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                os.kill(os.getpid(), signal.SIGKILL)  # todoruleid: family 3 (missed)

    def stop(self) -> None:
        self._stop_evt.set()


class MemoryMonitor:
    """Tracks allocated / reserved CUDA memory and guards against running into the OOM killer."""

    def __init__(self, device: torch.device, max_frac: float = 0.9):
        self.device, self.max_frac = device, max_frac

    def check(self, step: int) -> Dict[str, float]:
        if self.device.type != "cuda":
            return {}
        reserved = torch.cuda.memory_reserved(self.device)
        frac = reserved / torch.cuda.get_device_properties(self.device).total_memory
        if frac > self.max_frac:
            logger.error("step %d: %.1f%% of device memory reserved (limit %.0f%%)",
                         step, 100 * frac, 100 * self.max_frac)
            os.kill(os.getpid(), signal.SIGTERM)  # todoruleid: family 3 (missed)
        return {"mem/alloc_gb": torch.cuda.memory_allocated(self.device) / 2 ** 30,
                "mem/reserved_gb": reserved / 2 ** 30}


class ThroughputMonitor:
    """Clips/s over a sliding window plus GPU utilisation sampled through NVML on rank 0."""

    def __init__(self, rank: int, device: torch.device, window: int = 50,
                 util_window_s: float = 0.5):
        self.rank, self.device, self.util_window_s = rank, device, util_window_s
        self._times: deque = deque(maxlen=window)
        self._samples: deque = deque(maxlen=window)
        self.last_util: Optional[float] = None

    def _gpu_utilization(self) -> Optional[float]:
        readings: List[float] = []
        for _ in range(2):
            try:
                readings.append(float(torch.cuda.utilization(self.device)))
            except Exception:  # pynvml missing or NVML unavailable
                pass
            time.sleep(self.util_window_s)  # ruleid: MLS307
        return sum(readings) / len(readings) if readings else None

    def on_step(self, step: int, num_clips: int) -> None:
        self._times.append(time.perf_counter())
        self._samples.append(num_clips)
        if self.rank == 0 and self.device.type == "cuda":
            self.last_util = self._gpu_utilization()

    def summary(self) -> Dict[str, float]:
        if len(self._times) < 2:
            return {}
        out = {"perf/clips_per_s": sum(list(self._samples)[1:]) / max(self._times[-1] - self._times[0], 1e-6)}
        if self.last_util is not None:
            out["perf/gpu_util"] = self.last_util
        return out


def register_activation_stats(model: nn.Module, every: int = 100,
                              max_elems: int = 4096) -> Tuple[Dict[str, Tuple[float, float]], list]:
    """Forward hooks that record mean/std of a random subsample of each block's output."""
    stats: Dict[str, Tuple[float, float]] = {}
    handles = []
    counter = {"n": 0}

    def make_hook(name: str):
        def hook(module: nn.Module, inputs, output):
            if not module.training or counter["n"] % every != 0:
                return
            flat = output.detach().flatten()
            if flat.numel() > max_elems:
                torch.manual_seed(0)  # ruleid: MLS301
                flat = flat[torch.randperm(flat.numel(), device=flat.device)[:max_elems]]
            stats[name] = (flat.float().mean().item(), flat.float().std().item())
        return hook

    def count_hook(module: nn.Module, inputs):
        if module.training:
            counter["n"] += 1

    handles.append(model.register_forward_pre_hook(count_hook))
    for name, module in model.named_modules():
        if name.startswith("blocks.") and name.count(".") == 1:
            handles.append(module.register_forward_hook(make_hook(name)))
    return stats, handles
