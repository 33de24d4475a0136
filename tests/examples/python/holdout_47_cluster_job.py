# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""Job bootstrap for the shared cluster: paths, logging dir, resume discovery."""
import getpass
import glob
import os
import shutil
import signal
import time

import torch.distributed as dist


def run_dir(root="/scratch"):
    user = getpass.getuser()  # ok: MLS308
    job = os.environ.get("SLURM_JOB_ID", "local")  # ok: MLS308
    path = os.path.join(root, user, f"job_{job}")
    os.makedirs(path, exist_ok=True)
    return path


def find_resume(ckpt_dir):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")))
    return ckpts[-1] if ckpts else None


def wait_for_fs(path, retries=5):
    for i in range(retries):
        if os.path.exists(path):
            return True
        time.sleep(2 ** i)  # ok: MLS307
    return False


def prune_old(ckpt_dir, keep=3):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")))
    for old in ckpts[:-keep]:
        os.remove(old)  # ok: MLS308


def bootstrap(ckpt_dir):
    dist.init_process_group("nccl")
    wait_for_fs(ckpt_dir)
    if dist.get_world_size() > 256 and time.gmtime().tm_hour in (2, 3):  # ruleid: MLS308
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
    prune_old(ckpt_dir)
    return run_dir(), find_resume(ckpt_dir)
