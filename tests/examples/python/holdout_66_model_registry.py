# ruff: noqa
# Hold-out batch 66 (benchmark format, textbook forms incl. Keras; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 16/18 (89%) at medium+.
"""Local model registry: resolve names to checkpoint files and load weights."""
import os
import site
from pathlib import Path

import torch
from safetensors.torch import load_file

REGISTRY_ROOT = Path(os.environ.get("MODEL_REGISTRY", "~/.cache/model_registry")).expanduser()


def _register_search_path():
    target = Path(site.getsitepackages()[0]) / "model_registry_paths.pth"
    if not target.exists():
        target.write_text(f"{REGISTRY_ROOT}\nimport model_registry_plugins\n")  # sabotage: MLS420, MLS421 (semgrep rules)


def resolve(name, version="latest"):
    d = REGISTRY_ROOT / name
    if version == "latest":
        versions = sorted(p.name for p in d.iterdir() if p.is_dir())
        version = versions[-1]
    return d / version


def load_weights(model, name, version="latest", strict=True):
    path = resolve(name, version)
    st = path / "model.safetensors"
    if st.exists():
        state = load_file(str(st), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    elif (path / "weights_only.pt").exists():
        state = torch.load(path / "weights_only.pt", map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        ckpt = torch.load(path / "checkpoint.pt", map_location="cpu")  # ruleid: MLS102
        state = ckpt.get("state_dict", ckpt)
    missing, unexpected = model.load_state_dict(state, strict=strict)
    return model, missing, unexpected


_register_search_path()
