# ruff: noqa
# Hold-out batch 79 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 12/19 (63%) at medium+.
"""Preemption-safe checkpointing and data fetching for DDP jobs on the cluster."""
import os
import signal
import sys
import time
import urllib.request

import torch
import torch.distributed as dist

_STOP = {"requested": False}


def _on_sigterm(signum, frame):
    _STOP["requested"] = True


def install_preemption_handler():
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _on_sigterm)  # ok: MLS307


def fetch(url, dest, retries=4, timeout=60):
    if os.path.exists(dest):
        return dest
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dest + ".part", "wb") as f:  # ok: MLS411, MLS412
                f.write(r.read())
            os.replace(dest + ".part", dest)
            return dest
        except OSError:
            time.sleep(5 * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"failed to download {url}")


def save(model, opt, sched, step, path):
    if dist.get_rank() == 0:  # ok: MLS307
        state = {"model": model.module.state_dict(), "opt": opt.state_dict(),
                 "sched": sched.state_dict(), "step": step}
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)
    dist.barrier()  # ok: MLS307


def resume(model, opt, sched, path):
    if not os.path.exists(path):
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.module.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    return state["step"]


def maybe_stop(model, opt, sched, step, path):
    if _STOP["requested"]:
        save(model, opt, sched, step, path)
        dist.destroy_process_group()  # ok: MLS307
        sys.exit(0)  # ok: MLS307
