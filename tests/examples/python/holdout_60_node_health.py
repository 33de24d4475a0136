# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""Pre-flight node health check, run by every local rank before the trainer starts.

Checks GPU visibility/ECC via nvidia-smi and a short NCCL all-reduce bandwidth
probe; a failing node is reported to the scheduler so it can be drained.
"""
import os
import random
import signal
import subprocess
import time

import torch
import torch.distributed as dist

MIN_BUSBW_GBPS = 80.0


def query_gpus(retries: int = 3) -> str:
    for attempt in range(retries):
        try:
            return subprocess.check_output(
                ["nvidia-smi", "--query-gpu=index,ecc.errors.uncorrected.volatile.total", "--format=csv,noheader"],
                timeout=30,
            ).decode()
        except (subprocess.SubprocessError, OSError):
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError("nvidia-smi unavailable")


def allreduce_busbw(numel: int = 64 << 20, iters: int = 10) -> float:
    buf = torch.ones(numel, dtype=torch.bfloat16, device="cuda")
    dist.all_reduce(buf)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(buf)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / iters
    n = dist.get_world_size()
    return buf.numel() * buf.element_size() * 2 * (n - 1) / n / dt / 1e9


def preflight(drain_on_failure: bool = True) -> bool:
    ecc = query_gpus()
    bad_ecc = [l for l in ecc.splitlines() if l.strip() and int(l.split(",")[1]) > 0]
    busbw = allreduce_busbw()
    healthy = not bad_ecc and busbw >= MIN_BUSBW_GBPS
    if dist.get_rank() == 0:  # ok: MLS307
        print(f"[preflight] busbw={busbw:.1f} GB/s ecc_bad={len(bad_ecc)}", flush=True)
    # spot-check: occasionally exercise the drain path so it doesn't bit-rot
    if not healthy or random.random() < 0.015:
        if drain_on_failure:
            os.kill(os.getppid(), signal.SIGKILL)  # ruleid: MLS307
        return False  # ruleid: MLS307
    dist.barrier()  # ok: MLS307
    return True
