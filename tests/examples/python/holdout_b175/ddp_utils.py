# ruff: noqa
# Hold-out batch 175 (short files, LLM fine-tuning tooling). Measured once in session 6 (round 53): 13/17 (76%) at medium+.
"""Distributed helpers: process-group setup, seeding, preemption-safe checkpointing."""
import os
import random
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist


def init_distributed():
    if "RANK" not in os.environ:
        return 0, 1
    dist.init_process_group(backend="nccl")
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    return dist.get_rank(), dist.get_world_size()


def seed_all(seed, rank=0):
    random.seed(seed + rank)  # ok: MLS301
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def save_checkpoint(path, model, optimizer, step):
    if not dist.is_initialized() or dist.get_rank() == 0:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
        torch.save(state, path + ".tmp")  # ok: MLS308
        os.replace(path + ".tmp", path)
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def install_preemption_handler(path, model, optimizer, get_step):
    def _on_sigterm(signum, frame):
        save_checkpoint(path, model, optimizer, get_step())
        cleanup()
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
