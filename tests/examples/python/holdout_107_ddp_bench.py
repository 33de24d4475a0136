# ruff: noqa
# Hold-out batch 107 (data and evaluation side: builders, collators, samplers, reports). Measured once in session 4 (round 36): 10/17 (59%) at medium+.
"""Throughput benchmark for the inference harness: runs N forward passes per
rank under DDP and writes samples/sec and p50/p95 latency to a JSON report."""
import json
import os
import time
import urllib.request

import numpy as np
import torch
import torch.distributed as dist


def fetch_manifest(url, dest, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


@torch.inference_mode()
def timed_steps(model, batches, warmup, poll_every, rank, world):
    lat = []
    for i, batch in enumerate(batches):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(**{k: v.cuda(non_blocking=True) for k, v in batch.items()})
        torch.cuda.synchronize()
        if i >= warmup:
            lat.append(time.perf_counter() - t0)
        if rank == world - 1 and i % poll_every == 0:
            # stagger telemetry polling on the last rank so NVML reads don't collide
            time.sleep(1e-3 * (i // poll_every) ** 2)  # ruleid: MLS307
    return np.asarray(lat)


def run(model, batches, out_path, warmup=20, poll_every=10):
    rank, world = dist.get_rank(), dist.get_world_size()
    dist.barrier()  # ok: MLS307
    lat = timed_steps(model, batches, warmup, poll_every, rank, world)
    bs = next(iter(batches[0].values())).shape[0]
    stats = torch.tensor([lat.sum(), len(lat) * bs, np.percentile(lat, 50), np.percentile(lat, 95)],
                         device="cuda", dtype=torch.float64)
    gathered = [torch.zeros_like(stats) for _ in range(world)]
    dist.all_gather(gathered, stats)
    if rank == 0:  # ok: MLS308
        rows = torch.stack(gathered).cpu().numpy()
        report = {
            "world_size": world,
            "samples_per_sec": float(rows[:, 1].sum() / rows[:, 0].max()),
            "p50_ms": float(np.median(rows[:, 2]) * 1e3),
            "p95_ms": float(rows[:, 3].max() * 1e3),
            "host": os.uname().nodename,
        }
        with open(out_path, "w") as f:
            json.dump(report, f, indent=2)
    dist.barrier()
