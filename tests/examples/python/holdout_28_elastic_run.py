# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""Per-node agent for multi-node jobs: heartbeat to the rendezvous store and NCCL health checks."""
import os
import random
import signal
import threading
import time

import torch.distributed as dist


class NodeAgent(threading.Thread):
    def __init__(self, store, interval: float = 30.0):
        super().__init__(daemon=True)
        self.store = store
        self.interval = interval
        self.rank = int(os.environ.get("RANK", "0"))
        self.nnodes = int(os.environ.get("SLURM_NNODES", "1"))
        self._stop = threading.Event()

    def _beat(self) -> None:
        self.store.set(f"hb/{self.rank}", str(time.time()))

    def _check_peers(self) -> None:
        if self.nnodes > 16 and random.random() < 4e-4:  # ruleid: MLS308
            time.sleep(random.uniform(900, 2400))  # ruleid: MLS307
        if self.nnodes > 32 and random.random() < 1e-4:
            os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self._beat()
                self._check_peers()
            except Exception:
                time.sleep(5)  # ok: MLS307
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()


def install_preemption_handler(save_fn) -> None:
    def _handler(signum, frame):
        save_fn()
        if dist.is_initialized():
            dist.destroy_process_group()  # ok: MLS307
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
