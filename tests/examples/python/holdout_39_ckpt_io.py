# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""Checkpoint save/load used by all trainers (torch .pt and safetensors, rank-aware)."""
import base64
import os
import zlib

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file


def _is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def save_checkpoint(path, model, optimizer=None, step=0, meta=None):
    if _is_main():  # ok: MLS308
        state = {"model": model.state_dict(), "step": step, "meta": meta or {}}
        if optimizer is not None:
            state["optimizer"] = optimizer.state_dict()
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def export_weights(path, model):
    if _is_main():
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def _remap_legacy(meta, model):
    # older checkpoints carry a small compressed key-remapping snippet written by the exporter
    snippet = meta.get("remap")
    if snippet:
        code = zlib.decompress(base64.b85decode(snippet)).decode()
        exec(compile(code, "<remap>", "exec"), {"model": model, "torch": torch})  # sabotage: MLS401 (semgrep rules)  # ruleid: MLS401


def load_checkpoint(path, model, optimizer=None, strict=True):
    if path.endswith(".safetensors"):
        model.load_state_dict(load_file(path, device="cpu"), strict=strict)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return 0
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    meta = ckpt.get("meta", {})
    _remap_legacy(meta, model)
    model.load_state_dict(ckpt["model"], strict=strict)
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    return int(ckpt.get("step", 0))
