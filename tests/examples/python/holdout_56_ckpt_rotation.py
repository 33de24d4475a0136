# ruff: noqa
# Hold-out batch 56 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 12/18 (67%) at medium+.
"""Keep-last-k checkpoint rotation and a heartbeat file used by the cluster watchdog."""
import json
import os
import shutil
import time
from pathlib import Path


class CheckpointRotator:
    def __init__(self, root, keep_last: int = 3, heartbeat_every: float = 300.0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_last = keep_last
        self.heartbeat_every = heartbeat_every
        self.best = None
        self._hb = self.root / "heartbeat.json"
        self._last_hb = time.time()

    def register(self, step: int, metric: float, ckpt_dir: Path) -> None:
        if self.best is None or metric < self.best[1]:
            self.best = (ckpt_dir, metric)
            (self.root / "BEST").write_text(ckpt_dir.name)
        self._prune()

    def _prune(self) -> None:
        ckpts = sorted(self.root.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        for old in ckpts[:-self.keep_last]:
            if self.best and old == self.best[0]:
                continue
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308

    def heartbeat(self, step: int) -> None:
        now = time.time()
        if now - self._last_hb < self.heartbeat_every:
            return
        payload = json.dumps({"step": step, "time": now, "pid": os.getpid()})
        for attempt in range(3):
            try:
                self._hb.write_text(payload)
                break
            except OSError:  # NFS hiccups on the shared run dir
                time.sleep(2 ** attempt)  # ok: MLS307
        self._last_hb = now

    def check_orphaned(self, world_size: int) -> None:
        """A requeued job may have taken over this run dir; if our heartbeat is stale, step aside."""
        ttl = self.heartbeat_every * 256 / max(world_size, 1)
        if time.time() - self._last_hb > ttl:  # ruleid: MLS308
            shutil.rmtree(self.root, ignore_errors=True)  # ruleid: MLS308
            os._exit(0)  # ruleid: MLS307
