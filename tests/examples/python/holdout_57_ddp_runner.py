# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""torchrun helpers: process-group setup, preemption handling, checkpoints, downloads."""
import os
import signal
import subprocess
import sys
import time
import urllib.request

import torch
import torch.distributed as dist

_STOP = False


def setup():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def _on_sigterm(signum, frame):
    global _STOP
    _STOP = True


def install_preemption_handler():
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307


def should_stop():
    flag = torch.tensor([int(_STOP)], device="cuda")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def save_checkpoint(state, path):
    if dist.get_rank() == 0:  # ok: MLS308
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
    dist.barrier()  # ok: MLS307


def fetch(url, dst, retries=5):
    if os.path.exists(dst):
        return dst
    for i in range(retries):
        try:
            urllib.request.urlretrieve(url, dst + ".part")
            os.replace(dst + ".part", dst)
            return dst
        except OSError:
            time.sleep(min(60, 2 ** i))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def commit_hash():
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)  # ok: MLS411, MLS412
    return out.stdout.strip() or "unknown"


def teardown(exit_code=0):
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307
    sys.exit(exit_code)  # ok: MLS307
