# ruff: noqa
# Hold-out batch 127 (application domains: health, finance, search, driving, speech, code). Measured once in session 4 (round 41): 18/21 (86%) at medium+.
"""Checkpoint and config I/O for the credit-default tabular transformer.

Weights are exchanged as safetensors; full training state (optimizer, scheduler,
step) is saved with torch.save and restored with weights_only loading.
"""
import os
import signal
import subprocess
import sys

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def code_version():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True, timeout=5).strip()  # ok: MLS411, MLS412
    except (subprocess.SubprocessError, OSError):
        return "nogit"


def export_weights(model, path):
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, path, metadata={"git": code_version()})


def import_weights(model, path, strict=True):
    return model.load_state_dict(load_file(path, device="cpu"), strict=strict)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def save_state(path, model, opt, sched, step):
    tmp = path + ".partial"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "step": step}, tmp)
    os.replace(tmp, path)


def resume_state(path, model, opt, sched):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    return state["step"]


def load_woe_bins(path):
    # weight-of-evidence bin edges exported by the feature pipeline as plain float arrays
    arr = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return {k: arr[k] for k in arr.files}


def install_preemption_handler(get_state, path):
    def _handler(signum, frame):
        model, opt, sched, step = get_state()
        save_state(path, model, opt, sched, step)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handler)
