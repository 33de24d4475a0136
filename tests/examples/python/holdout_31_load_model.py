# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""Load exported models: safetensors/state-dict weights, or whole-module archives from v1 releases."""
import site
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

LEGACY_SRC = Path(__file__).resolve().parent / "legacy_modules"


def _make_legacy_importable():
    """v1 archives pickle classes as `models.v1.*`; expose the vendored copy of that package."""
    target = Path(site.getsitepackages()[0]) / "zz_legacy_models.pth"
    if not target.exists():
        target.write_text(str(LEGACY_SRC) + "\n")  # sabotage: MLS420 (semgrep rules)
    if str(LEGACY_SRC) not in sys.path:
        sys.path.insert(0, str(LEGACY_SRC))  # benign look-alike


def load_model(path, model_fn=None, device="cpu"):
    path = Path(path)
    if path.suffix == ".safetensors":
        model = model_fn()
        model.load_state_dict(load_file(str(path), device=device))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return model.to(device).eval()
    if model_fn is not None:
        state = torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model = model_fn()
        model.load_state_dict(state.get("model", state))
        return model.to(device).eval()
    _make_legacy_importable()
    model = torch.load(path, map_location=device, weights_only=False)  # ruleid: MLS101
    return model.eval()


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
