# ruff: noqa
# Hold-out batch 117 (textbook forms). Measured once in session 4 (round 39): 17/18 (94%) at medium+.
"""torchrun entry point: sets up the process group, handles preemption and records run metadata."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import torch
import torch.distributed as dist

STOP = {"requested": False}


def _on_sigterm(signum, frame):
    STOP["requested"] = True


def run_metadata():
    try:
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        commit = "nogit"
    return {"commit": commit, "host": socket.gethostname(), "world_size": dist.get_world_size()}  # ok: MLS308


def init_with_retry(attempts=5):
    for i in range(attempts):
        try:
            dist.init_process_group("nccl", timeout=torch.distributed.constants.default_pg_timeout)
            return
        except RuntimeError:
            time.sleep(5 * (i + 1))  # ok: MLS307
    sys.exit("could not initialise process group")  # ok: MLS307


def main(train_one_step, total_steps, ckpt_path="ckpt/last.pt", model=None):
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    init_with_retry()
    rank = int(os.environ["RANK"])  # ok: MLS308
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if rank == 0:
        os.makedirs(os.path.dirname(ckpt_path), exist_ok=True)
        with open("run_meta.json", "w") as fh:
            json.dump(run_metadata(), fh)
    dist.barrier()  # ok: MLS307
    for step in range(total_steps):
        train_one_step(step)
        if STOP["requested"]:
            if rank == 0 and model is not None:
                torch.save({"model": model.state_dict(), "step": step}, ckpt_path)  # ok: MLS308
            dist.barrier()
            break
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    print("import main() from your training script", file=sys.stderr)
