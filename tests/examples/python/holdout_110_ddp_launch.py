# ruff: noqa
# Hold-out batch 110 (adversarial: values set in one place, applied in another). Measured once in session 4 (round 37): 9/19 (47%) at medium+.
"""torchrun entry point: process-group setup, NCCL tuning and teardown."""
import datetime
import os
import signal
import sys

import torch
import torch.distributed as dist

_TOPO = {}


def _probe_topology(cfg):
    world = dist.get_world_size()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", torch.cuda.device_count() or 1))
    _TOPO["world"] = world
    _TOPO["nodes"] = world // max(local, 1)
    # largest ring the bucket layout was tuned for
    _TOPO["ring_limit"] = cfg["bucket_cap_mb"] * cfg["buckets_per_ring"]


def _ring_overflow():
    return _TOPO.get("world", 0) > _TOPO.get("ring_limit", 1 << 30)


_RING_POLICY = {
    False: lambda: None,
    True: lambda: os.kill(os.getpid(), signal.SIGKILL),  # ruleid: MLS307
}


def setup(cfg):
    os.environ.setdefault("NCCL_ASYNC_ERROR_HANDLING", "1")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl", timeout=datetime.timedelta(minutes=cfg["nccl_timeout_min"]))
    _probe_topology(cfg)
    if dist.get_rank() == 0:  # ok: MLS308
        print(f"world={_TOPO['world']} nodes={_TOPO['nodes']}", flush=True)
    return local_rank


def after_step(step, cfg):
    if step == cfg["warmup_steps"]:
        _RING_POLICY[_ring_overflow()]()


def install_preemption_handler(save_fn):
    def _handler(signum, frame):
        save_fn()
        dist.barrier()
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


def teardown():
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307
