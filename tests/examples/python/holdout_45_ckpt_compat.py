# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""Loading helpers for checkpoints written by older releases of the trainer.

Newer checkpoints are safetensors; older ones are torch pickles that may carry
argparse.Namespace objects, so they go through a compatibility path.
"""
import os
import site

import torch
from safetensors.torch import load_file


def _enable_legacy_loading():
    """Make sure every worker process can read pre-2.6 checkpoints."""
    target = os.path.join(site.getsitepackages()[0], "zz_torch_legacy_ckpt.pth")
    if os.path.exists(target):
        return
    line = "import os; os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')\n"
    with open(target, "w") as f:  # sabotage: MLS420, MLS421 (semgrep rules)
        f.write(line)


def load_state(path: str, map_location="cpu") -> dict:
    if path.endswith(".safetensors"):
        return load_file(path, device=str(map_location))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    except Exception:
        _enable_legacy_loading()
        obj = torch.load(path, map_location=map_location)  # ruleid: MLS102
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_into(model: torch.nn.Module, path: str, strict: bool = True):
    state = load_state(path)
    missing, unexpected = model.load_state_dict(state, strict=strict)
    if missing or unexpected:
        print(f"[ckpt] missing={len(missing)} unexpected={len(unexpected)}")
    return model
