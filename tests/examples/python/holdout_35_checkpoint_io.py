# ruff: noqa
# Hold-out batch 35 (benchmark format, incident write-up style; by a helper that never saw mlscan's code). Measured once after round 14: 19/19 (100%) at medium+.
"""Checkpoint and artifact readers used by the evaluation harness."""
import json
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file


def read_run_config(run_dir: Path) -> dict:
    with open(run_dir / "config.yaml") as fh:
        return yaml.load(fh, Loader=yaml.SafeLoader)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_weights(path: Path) -> dict:
    if path.suffix == ".safetensors":
        return load_file(str(path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_embeddings(path: Path) -> np.ndarray:
    arr = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return arr.astype(np.float32)


def load_reference_model(tag="v0.16.0"):
    return torch.hub.load(f"pytorch/vision:{tag}", "resnet50", weights="IMAGENET1K_V2")  # ruleid: MLS108 (low: ref chosen at run time)


def export(state_dict: dict, out: Path, meta: dict):
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in state_dict.items() if torch.is_tensor(v)}
    save_file(tensors, str(out), metadata={k: str(v) for k, v in meta.items()})
    (out.with_suffix(".json")).write_text(json.dumps(meta, indent=2))


def latest_checkpoint(run_dir: Path):
    ckpts = sorted(run_dir.glob("step-*.safetensors"), key=lambda p: int(p.stem.split("-")[1]))
    return ckpts[-1] if ckpts else None
