# ruff: noqa
# Hold-out batch 100 (shared training library internals). Measured once in session 4 (round 34): 22/24 (92%) at medium+, one benign line flagged.
"""Preemption handling for SLURM + accelerate jobs: save on SIGTERM, then requeue."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator

log = logging.getLogger(__name__)


class PreemptionHandler:
    def __init__(self, accelerator: Accelerator, ckpt_root: str, requeue: bool = True) -> None:
        self.accelerator = accelerator
        self.ckpt_root = Path(ckpt_root)
        self.requeue = requeue
        self.step = 0
        self._requested = False
        signal.signal(signal.SIGTERM, self._on_signal)  # ok: MLS307
        signal.signal(signal.SIGUSR1, self._on_signal)  # ok: MLS307

    def _on_signal(self, signum, frame) -> None:
        log.warning("received signal %d, will checkpoint at the next step boundary", signum)
        self._requested = True

    def maybe_checkpoint_and_exit(self) -> None:
        """Call once per step, after optimizer.step()."""
        if not self._requested:
            return
        out = self.ckpt_root / f"step_{self.step}"
        self.accelerator.save_state(str(out))
        self.accelerator.wait_for_everyone()  # ok: MLS307
        job_id = os.environ.get("SLURM_JOB_ID")
        if self.requeue and job_id and self.accelerator.is_main_process:
            subprocess.run(["scontrol", "requeue", job_id], check=False)  # ok: MLS308
        log.info("checkpoint written to %s, exiting for requeue", out)
        sys.exit(0)  # ok: MLS307


def latest_state(ckpt_root: str) -> Optional[Path]:
    steps = sorted(Path(ckpt_root).glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    return steps[-1] if steps else None


def load_backbone(model: torch.nn.Module, path: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = {k.removeprefix("module."): v for k, v in state.get("model", state).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    log.info("backbone loaded: %d missing, %d unexpected", len(missing), len(unexpected))
