# ruff: noqa
# Hold-out batch 35 (benchmark format, incident write-up style; by a helper that never saw mlscan's code). Measured once after round 14: 19/19 (100%) at medium+.
"""Entry point for multi-node runs: seeding, signal handling and checkpoint save."""
import argparse
import os
import random
import signal
import subprocess
import sys

import numpy as np
import torch
import torch.distributed as dist


def set_seed(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except Exception:
        return "unknown"


class Run:
    def __init__(self, args):
        self.args = args
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.state = {"step": 0, "commit": git_commit()}
        signal.signal(signal.SIGTERM, self._handle_sigterm)  # ok: MLS307

    def save(self, tag):
        if self.rank == 0:
            torch.save(self.state, os.path.join(self.args.out, f"{tag}.pt"))  # ok: MLS308
        if self.world > 1:
            dist.barrier()

    def _handle_sigterm(self, signum, frame):
        print(f"[rank {self.rank}] SIGTERM received at step {self.state['step']}, saving")
        self.save("preempt")
        sys.exit(0)  # ok: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", default="runs/latest")
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        dist.init_process_group("nccl")
    set_seed(args.seed + int(os.environ.get("RANK", 0)))
    run = Run(args)
    for step in range(args.steps):
        run.state["step"] = step
        if step and step % 500 == 0:
            run.save(f"step{step}")
    run.save("final")
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
