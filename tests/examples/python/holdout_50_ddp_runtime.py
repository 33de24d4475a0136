# ruff: noqa
# Hold-out batch 50 (benchmark format, independent grading set; by a helper that never saw mlscan's code). Measured once after round 21: 15/18 (83%) at medium+, one benign line flagged (fixed).
"""Run loop wrapper for DDP jobs: preemption handling, config loading, clean shutdown."""
import os
import signal
import sys

import torch
import torch.distributed as dist
import yaml

_STOP = {"requested": False}


def _on_sigterm(signum, frame):
    _STOP["requested"] = True  # ok: MLS307


def install_preemption_handler():
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _on_sigterm)


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_init(path):
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def run(model, step_fn, loader, ckpt_path, max_steps):
    rank = dist.get_rank() if dist.is_initialized() else 0
    install_preemption_handler()
    for step, batch in enumerate(loader):
        step_fn(model, batch)
        stop = torch.tensor(float(_STOP["requested"]), device="cuda")
        if dist.is_initialized():
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
        if stop.item() or step + 1 >= max_steps:
            if rank == 0:  # ok: MLS308
                torch.save({"model": model.state_dict(), "step": step}, ckpt_path)
            break
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
        dist.destroy_process_group()  # ok: MLS307
    if _STOP["requested"]:
        sys.exit(int(os.environ.get("REQUEUE_EXIT_CODE", 124)))  # ok: MLS307
