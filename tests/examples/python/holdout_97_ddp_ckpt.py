# ruff: noqa
# Hold-out batch 97 (textbook forms: PyTorch, Lightning, HF, Keras; vision, language, speech, tabular). Measured once in session 4 (round 34): 16/18 (89%) at medium+.
"""Preemption-safe checkpointing for DDP jobs running under SLURM."""
import os
import signal
import sys

import torch
import torch.distributed as dist
from safetensors.torch import load_file

_STATE = {"model": None, "optimizer": None, "step": 0, "path": "ckpt/last.pt"}


def _save(path):
    if dist.get_rank() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save({"model": _STATE["model"].module.state_dict(),  # ok: MLS308
                    "optimizer": _STATE["optimizer"].state_dict(),
                    "step": _STATE["step"]}, path + ".tmp")
        os.replace(path + ".tmp", path)
    dist.barrier()  # ok: MLS307


def _on_preempt(signum, frame):
    _save(_STATE["path"])
    dist.destroy_process_group()  # ok: MLS307
    sys.exit(0)  # ok: MLS307


def install(model, optimizer, path="ckpt/last.pt"):
    _STATE.update(model=model, optimizer=optimizer, path=path)
    signal.signal(signal.SIGTERM, _on_preempt)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _on_preempt)


def resume(model, optimizer, path="ckpt/last.pt"):
    if not os.path.exists(path):
        return 0
    ckpt = torch.load(path, map_location=f"cuda:{torch.cuda.current_device()}", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.module.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return int(ckpt["step"])


def load_pretrained_backbone(model, path):
    state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.module.backbone.load_state_dict(state, strict=False)


def on_step(step, every=1000):
    _STATE["step"] = step
    if step % every == 0:
        _save(_STATE["path"])
