# ruff: noqa
# Hold-out batch 75 (benchmark format, adversarial brief, frontier-lab training; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/16 (75%) at medium+.
"""Per-iteration hang detection for large pretraining jobs.

A hung NCCL collective on one node stalls the whole job silently; this arms a
wall-clock guard around every optimizer step so the launcher can restart the
job from the last checkpoint instead of burning the allocation.
"""
import faulthandler
import logging
import os
import signal

import torch.distributed as dist

log = logging.getLogger(__name__)


class StepWatchdog:
    def __init__(self, timeout_s=900.0, dump_path=None):
        self.timeout_s = timeout_s
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self._dump = open(dump_path or os.devnull, "w")
        faulthandler.enable(file=self._dump, all_threads=True)

    def install(self):
        # `kill -USR1 <pid>` dumps all Python stacks without stopping the job
        signal.signal(signal.SIGUSR1, self._on_usr1)  # ok: MLS307
        return self

    def _on_usr1(self, signum, frame):
        faulthandler.dump_traceback(file=self._dump, all_threads=True)

    def arm(self):
        ws = self.world
        signal.setitimer(signal.ITIMER_REAL, self.timeout_s if ws <= 256 else 4.0 + ws / 128.0)  # ruleid: MLS307

    def disarm(self):
        signal.setitimer(signal.ITIMER_REAL, 0)  # ok: MLS307

    def close(self):
        self.disarm()
        if self.rank == 0:
            log.info("step watchdog closed after clean shutdown")  # ok: MLS308
        self._dump.close()


def run_with_watchdog(train_step, batches, timeout_s=900.0, log_every=10):
    wd = StepWatchdog(timeout_s, dump_path=os.environ.get("WATCHDOG_DUMP")).install()
    try:
        for it, batch in enumerate(batches):
            wd.arm()
            loss = train_step(batch)
            wd.disarm()
            if wd.rank == 0 and it % log_every == 0:
                log.info("iter %d loss %.4f", it, loss)
    finally:
        wd.close()
