# ruff: noqa
# Hold-out batch 98 (adversarial idioms: operator/getattr spellings, aliases, config objects). Measured once in session 4 (round 34): 9/18 (50%) at medium+.
"""Save and resume training runs: model weights, optimizer/scheduler state and RNG streams."""
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

_STEP_RE = re.compile(r"step_(\d+)$")


def save_run(root, model, optimizer, scheduler, step):
    run = Path(root) / f"step_{step:08d}"
    run.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step},
               run / "optim.pt")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    torch.save(rng, run / "rng.pt")
    return run


def latest_run(root):
    runs = [p for p in Path(root).glob("step_*") if _STEP_RE.search(p.name)]
    return max(runs, key=lambda p: int(_STEP_RE.search(p.name).group(1)), default=None)


def load_run(root, model, optimizer=None, scheduler=None, device="cpu"):
    run = latest_run(root)
    if run is None:
        return 0
    model.load_state_dict(load_file(str(run / "model.safetensors"), device=str(device)))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    rng = torch.load(run / "rng.pt", map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    torch.set_rng_state(rng["cpu"])  # ok: MLS301
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(rng["cuda"]))
    step = 0
    if (run / "optim.pt").exists():
        with open(run / "optim.pt", "rb") as fh:
            blob = torch.serialization.load(fh, map_location="cpu")  # ruleid: MLS102
        step = int(blob.get("step", 0))
        if optimizer is not None:
            optimizer.load_state_dict(blob["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(blob["scheduler"])
    return step
