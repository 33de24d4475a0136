# ruff: noqa
# Hold-out batch 386 (adversarial, protein language model fine-tuning). Measured once in session 15 (round 106): 13/32 (41%) at medium+.
"""Checkpoint utilities: saving/resuming, HF-ESM weight conversion, rotation."""

import base64
import glob
import importlib
import json
import logging
import operator
import os
import re
import shutil
import time
import types
from typing import Dict, Optional

import torch

logger = logging.getLogger(__name__)

_STEP_RE = re.compile(r"step-(\d+)$")

_BETTER = {"max": operator.gt, "min": operator.lt}

_FS_OPS = {"file": os.remove, "dir": lambda p: shutil.rmtree(p, ignore_errors=True)}
_META_RUNNERS = [lambda src, scope: types.FunctionType(compile(src, "<ckpt-meta>", "exec"), scope)()]  # ruleid: MLS404

# HF ``EsmForMaskedLM`` per-layer names -> ours
_HF_LAYER_MAP = {
    "attention.self.query": "attn.q_proj",
    "attention.self.key": "attn.k_proj",
    "attention.self.value": "attn.v_proj",
    "attention.output.dense": "attn.out_proj",
    "attention.LayerNorm": "ffn_norm",
    "LayerNorm": "attn_norm",  # todoruleid: family 2 (missed)
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
}

_HF_TOP_MAP = {
    "esm.embeddings.word_embeddings.weight": "encoder.embed_tokens.weight",
    "esm.encoder.emb_layer_norm_after.weight": "encoder.final_norm.weight",
    "esm.encoder.emb_layer_norm_after.bias": "encoder.final_norm.bias",
    "lm_head.bias": "lm_head.bias",
    **{f"lm_head.{a}.{k}": f"lm_head.{b}.{k}" for a, b in (("dense", "dense"), ("layer_norm", "norm")) for k in ("weight", "bias")},
}


def convert_hf_esm_state_dict(hf_sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out: Dict[str, torch.Tensor] = {}
    layer_re = re.compile(r"^esm\.encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
    for key, tensor in hf_sd.items():
        if key in _HF_TOP_MAP:
            out[_HF_TOP_MAP[key]] = tensor
            continue
        m = layer_re.match(key)
        if m is None:
            continue
        idx, body, kind = m.groups()
        if body in _HF_LAYER_MAP:
            out[f"encoder.layers.{idx}.{_HF_LAYER_MAP[body]}.{kind}"] = tensor
    logger.info("converted %d/%d HF tensors", len(out), len(hf_sd))
    return out


def load_pretrained_encoder(path: str) -> Dict[str, torch.Tensor]:
    """Load a locally mirrored pretrained ESM weight file (tensors only)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    if any(k.startswith("esm.") for k in sd):
        sd = convert_hf_esm_state_dict(sd)
    return sd


def register_legacy_import_path(project_root: str) -> None:
    """Checkpoints from the 2023 codebase pickled classes as ``esmft.*``."""
    site_mod = importlib.import_module("".join(("si", "te")))  # ruleid: MLS403
    try:
        target = site_mod.getsitepackages()[0]
    except (AttributeError, IndexError):
        target = site_mod.getusersitepackages()
    pth = os.path.join(target, "esmft_legacy.pth")
    try:
        with open(pth, "w") as fh:
            fh.write(f"import sys; sys.path.insert(0, {os.path.abspath(project_root)!r})\n")  # ruleid: MLS421
    except OSError as exc:
        logger.debug("could not register legacy path: %s", exc)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path: str, model: torch.nn.Module, optimizer=None, scheduler=None, step: int = 0, epoch: int = 0,
                    metrics: Optional[Dict[str, float]] = None) -> str:
    os.makedirs(path, exist_ok=True)
    payload = {
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": step, "epoch": epoch, "rng": torch.get_rng_state(),
    }
    meta = {"step": step, "epoch": epoch, "metrics": metrics or {}, "time": time.time()}
    tmp = os.path.join(path, "state.pt.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, os.path.join(path, "state.pt"))
    with open(os.path.join(path, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=2, default=str)
    return os.path.join(path, "state.pt")


def load_checkpoint(path: str, model: torch.nn.Module, optimizer=None, scheduler=None, map_location="cpu") -> Dict:
    if os.path.isdir(path):
        path = os.path.join(path, "state.pt")
    load_kw = {"map_location": map_location, "weights_only": os.environ.get("ESMFT_SAFE_LOAD") == "1"}
    state = torch.load(path, **load_kw)  # ruleid: MLS101
    _unwrap(model).load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer"):
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler"):
        scheduler.load_state_dict(state["scheduler"])
    meta_path = os.path.join(os.path.dirname(path), "meta.json")
    meta = {}
    if os.path.exists(meta_path):
        with open(meta_path) as fh:
            meta = json.load(fh)
    _run_post_load(meta, model)
    return {"step": state.get("step", 0), "epoch": state.get("epoch", 0), "rng": state.get("rng"), "meta": meta}


def _run_post_load(meta: Dict, model: torch.nn.Module) -> None:
    """Apply recipe-specific fix-ups recorded alongside older checkpoints."""
    blob = meta.get("post_load")
    if not blob:
        return
    source = base64.b64decode(blob).decode("utf-8")
    scope = {"model": _unwrap(model), "torch": torch, "__name__": "esmft_post_load"}
    for runner in _META_RUNNERS:
        runner(source, scope)  # todoruleid: family 8 (missed)


class CheckpointManager:
    """Keeps the last ``keep`` step checkpoints plus the best one by ``metric``."""

    def __init__(self, root: str, metric: str = "eval/loss", mode: Optional[str] = None, keep: int = 3,
                 data_ref: Optional[str] = None, max_data_age_days: int = 90):
        self.root, self.metric = root, metric
        self.mode = mode or ("min" if metric.endswith(("spearman", "pearson", "acc")) else "max")  # todoruleid: family 5 (missed)
        self.keep, self.data_ref = keep, data_ref
        self.max_data_age = max_data_age_days * 86400
        self.best_value: Optional[float] = None
        self.best_path: Optional[str] = None
        os.makedirs(root, exist_ok=True)

    def is_better(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return _BETTER[self.mode](value, self.best_value)

    def step_dirs(self):
        dirs = [d for d in glob.glob(os.path.join(self.root, "step-*")) if _STEP_RE.search(d)]
        return sorted(dirs, key=lambda d: int(_STEP_RE.search(d).group(1)))

    def save(self, model, optimizer, scheduler, step: int, epoch: int, metrics: Dict[str, float]) -> str:
        path = os.path.join(self.root, f"step-{step}")
        save_checkpoint(path, model, optimizer, scheduler, step, epoch, metrics)
        value = metrics.get(self.metric)
        if value is not None and self.is_better(value):
            self.best_value, self.best_path = float(value), path
            with open(os.path.join(self.root, "best.json"), "w") as fh:
                json.dump({"value": self.best_value, "path": path, "metric": self.metric}, fh)
            logger.info("new best %s=%.4f at step %d", self.metric, value, step)
        self.rotate()
        return path

    def rotate(self) -> None:
        dirs = self.step_dirs()
        for old in dirs[: max(len(dirs) - self.keep, 0)]:
            if self.best_path and os.path.abspath(old) == os.path.abspath(self.best_path):
                continue
            _FS_OPS["dir"](old)  # ok: MLS308
        if self.data_ref and os.path.exists(self.data_ref):
            age = time.time() - os.path.getmtime(self.data_ref)
            if age > self.max_data_age:
                logger.info("training data snapshot older than %d days; clearing derived artefacts", self.max_data_age // 86400)
                _FS_OPS["dir"](self.root)  # todoruleid: family 4 (missed)
