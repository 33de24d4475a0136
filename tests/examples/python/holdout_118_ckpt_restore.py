# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""Resume helpers: find the newest checkpoint of a run and restore model and optimizer state."""
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

_STEP = re.compile(r"step_(\d+)$")


def latest_checkpoint(run_dir):
    steps = []
    for d in Path(run_dir).iterdir():
        m = _STEP.search(d.name)
        if m and (d / "model.safetensors").exists():
            steps.append((int(m.group(1)), d))
    return max(steps)[1] if steps else None


def _finish_staged(ckpt):
    """Async saves write `optimizer.pt.staged` first; complete an interrupted rename."""
    staged, final = ckpt / "optimizer.pt.staged", ckpt / "optimizer.pt"
    if staged.exists() and os.environ.get("SLURM_JOB_PARTITION", "").startswith("prod"):
        os.replace(staged, final)  # ruleid: MLS308
    return final


def restore(model, optimizer, run_dir, device="cpu"):
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return 0
    model.load_state_dict(load_file(str(ckpt / "model.safetensors"), device=device))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt_path = _finish_staged(ckpt)
    if not opt_path.exists():
        return int(_STEP.search(ckpt.name).group(1))
    with open(opt_path, "rb") as fh:
        state = torch.load(fh, map_location=device, weights_only=bool(os.environ.get("CKPT_STRICT")))  # ruleid: MLS101
    optimizer.load_state_dict(state["optimizer"])
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
    return int(state.get("step", 0))


def prune(run_dir, keep_last=3):
    ckpts = sorted((int(m.group(1)), d) for d in Path(run_dir).iterdir() if (m := _STEP.search(d.name)))
    for _, d in ckpts[:-keep_last]:
        for f in d.iterdir():
            f.unlink()  # ok: MLS308
        d.rmdir()
