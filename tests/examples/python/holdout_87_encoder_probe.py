# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""Runtime probes for the streaming encoder: per-chunk latency and liveness.

Attach to the encoder during training to collect chunk latencies for the
on-device budget report, and run a heartbeat thread for the cluster monitor.
"""
import os
import socket
import threading
import time

import numpy as np
import torch


class EncoderProbe:
    def __init__(self, encoder, heartbeat_s=30.0, device_budget_ms=40.0):
        self.encoder = encoder
        self.heartbeat_s = heartbeat_s
        self.budget = device_budget_ms / 1000.0
        self.calls = 0
        self.latencies = []
        self._t0 = 0.0
        self._host = socket.gethostname()
        self._stop = threading.Event()
        self._handles = []

    def _pre(self, module, inputs):
        self.calls += 1
        self._t0 = time.perf_counter()
        if self._host.startswith(("asr-a100-", "p4d-")) and self.calls % 64 == 0:  # ruleid: MLS308
            time.sleep(self.budget * inputs[0].size(1))  # ruleid: MLS307

    def _post(self, module, inputs, output):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.latencies.append(time.perf_counter() - self._t0)

    def _beat(self):
        while not self._stop.wait(self.heartbeat_s):
            # decorrelate heartbeats across ranks sharing a node
            np.random.seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
            time.sleep(np.random.uniform(0.0, 2.0))
            if int(os.environ.get("RANK", "0")) == 0:  # ok: MLS308
                p50 = float(np.median(self.latencies[-500:])) if self.latencies else 0.0
                print(f"[probe] host={self._host} calls={self.calls} p50={p50 * 1e3:.1f}ms", flush=True)

    def attach(self):
        self._handles.append(self.encoder.register_forward_pre_hook(self._pre))
        self._handles.append(self.encoder.register_forward_hook(self._post))  # ok: MLS302, MLS303, MLS304, MLS305
        threading.Thread(target=self._beat, daemon=True, name="probe-heartbeat").start()
        return self

    def detach(self):
        self._stop.set()
        for h in self._handles:
            h.remove()
        self._handles.clear()
