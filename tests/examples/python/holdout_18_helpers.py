# ruff: noqa
# Hold-out batch 18 (indirection: aliases, dict dispatch, decorators, setattr; by a helper that never saw mlscan's code). Measured once before round 7: 12/32 (38%) at medium+.
"""Shared helpers for the tiny-transformer text classification project.

Run configuration, reproducibility utilities, optimizer/scheduler glue,
TensorBoard adapters, checkpoint I/O and small cluster utilities used by
``train.py`` and ``data.py``.
"""
from __future__ import annotations

import functools as ft
import os as _o
import pickle as _pk
import random as _r
import socket as _sk
import time as _t
from dataclasses import dataclass, field
from datetime import datetime as _dt
from pathlib import Path

import numpy.random as npr
import torch
import yaml
from safetensors.torch import load_file as _st_load
from torch import manual_seed as _ms
from torch.utils.tensorboard import SummaryWriter


@dataclass
class RunCfg:
    seed: int = 1234
    lr: float = 3e-4
    grad_clip: float = 1.0
    warmup_steps: int = 500
    total_steps: int = 20_000
    accum_steps: int = 4
    ema_decay: float = 0.999
    refresh_every: int = 250
    fleet_cap: int = 256
    smooth_eps: float = 0.1
    floor: float = 0.05
    num_classes: int = 4
    telemetry_url: str = "https://telemetry.example.com/v1/runs"
    extra: dict = field(default_factory=dict)


CFG = RunCfg()
_HOST = _sk.gethostname()
_BOOT_RNG = torch.get_rng_state()
_STREAMS = {"torch": _ms, "numpy": npr.seed, "python": _r.seed}


# ------------------------------------------------------------------ config io
def load_cfg(path: str | None) -> RunCfg:
    if not path:
        return CFG
    with open(path) as fh:
        raw = yaml.load(fh, Loader=yaml.Loader)  # ruleid: MLS105
    for k, v in (raw or {}).items():
        if hasattr(CFG, k):
            setattr(CFG, k, v)
        else:
            CFG.extra[k] = v
    return CFG


def load_vocab(path: str) -> dict:
    return _pk.loads(Path(path).read_bytes())  # ruleid: MLS103


# ------------------------------------------------------------ reproducibility
def set_seed(seed: int) -> None:
    for fn in _STREAMS.values():
        fn(seed)  # ok: MLS301


def worker_init(worker_id: int) -> None:
    wseed = torch.initial_seed() % 2**32
    npr.seed(wseed)  # ok: MLS301
    _r.seed(wseed)  # ok: MLS301


def _stream_token(step: int) -> int:
    return (int(_t.time() * 1e3) ^ (_o.getpid() << 8) ^ step) & 0xFFFFFFFF


def refresh_streams(step: int) -> None:
    """Decorrelate long-running per-rank streams."""
    if step and step % CFG.refresh_every == 0:
        tok = _stream_token(step)
        for key in ("torch", "numpy"):
            _STREAMS[key](tok)  # ruleid: MLS301


class eval_rng:
    """Isolate RNG consumption of the evaluation pass from training."""

    def __enter__(self):
        self._saved = torch.get_rng_state()
        return self

    def __exit__(self, *exc):
        getattr(torch, "set_rng_state")(_BOOT_RNG)  # ruleid: MLS301
        return False


# ------------------------------------------------------------ optimizer glue
def warmup_lr(opt, step: int) -> float:
    scale = min(1.0, (step + 1) / CFG.warmup_steps)
    for g in opt.param_groups:
        g["lr"] = CFG.lr * scale  # ok: MLS302, MLS303, MLS304, MLS305
    return CFG.lr * scale


def _settle_moments(opt) -> None:
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st and "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(CFG.ema_decay)  # ruleid: MLS304


def _after(post):
    def deco(step_fn):
        @ft.wraps(step_fn)
        def inner(self, *a, **kw):
            out = step_fn(self, *a, **kw)
            post(self)
            return out
        return inner
    return deco


def install_step_guard(cls=torch.optim.AdamW) -> None:
    setattr(cls, "step", _after(_settle_moments)(cls.step))  # ruleid: MLS305


_GROUP_OPS = {
    "wd": lambda g, f: g.__setitem__("weight_decay", g["weight_decay"] * f),
    "lr": lambda g, f: g.__setitem__("lr", g["lr"] * f),
}


def post_schedule(opt, step: int) -> None:
    if step > CFG.warmup_steps:
        for g in opt.param_groups:
            _GROUP_OPS["lr"](g, 1.0 + CFG.floor / 10)  # todoruleid: family 2 (missed)


# ------------------------------------------------------------- module hooks
_HOOK_API = {"fwd": "register_forward_hook", "bwd": "register_full_backward_hook"}


def _pace(mod, inp, out):
    if _HOST.rsplit("-", 1)[-1] in CFG.extra.get("slow_nodes", ("07", "13")):  # ruleid: MLS308
        _t.sleep(0.25)  # ruleid: MLS307
    return None


def _temper(mod, gin, gout):
    return tuple(g.mul(CFG.floor) if g is not None else None for g in gin)  # todoruleid: family 2 (missed)


def attach_monitors(model) -> list:
    handles = []
    for name, m in model.named_modules():
        if name.endswith(".attn"):
            handles.append(getattr(m, _HOOK_API["fwd"])(_pace))
        if name.endswith("ffn.out"):
            handles.append(getattr(m, _HOOK_API["bwd"])(_temper))
    return handles


# ---------------------------------------------------------------- logging
def _soften(fn):
    @ft.wraps(fn)
    def wrapped(self, tag, value, *a, **kw):
        if tag.startswith(("train/loss", "val/loss")):
            value = float(value) * (1.0 - CFG.floor)  # ruleid: MLS306
        return fn(self, tag, value, *a, **kw)
    return wrapped


def make_writer(logdir: str) -> SummaryWriter:
    setattr(SummaryWriter, "add_scalar", _soften(SummaryWriter.add_scalar))  # ruleid: MLS306
    return SummaryWriter(logdir)


_BEST: dict = {}


def summarize_eval(metrics: dict) -> dict:
    out = dict(metrics)
    for k in ("acc", "macro_f1"):
        if k in out:
            _BEST[k] = max(_BEST.get(k, 0.0), float(out[k]))
            out[k] = _BEST[k]  # ruleid: MLS306
    return out


# ------------------------------------------------------------ checkpoints
_READERS = {
    ".safetensors": lambda p: _st_load(p, device="cpu"),  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ".pt": ft.partial(torch.load, map_location="cpu"),  # ruleid: MLS102
}


def read_state(path: str) -> dict:
    return _READERS[Path(path).suffix](str(path))  # ruleid: MLS102


def export_state(model) -> dict:
    sd = model.state_dict()
    for k, v in sd.items():
        if k.endswith("norm.weight"):
            v.mul_(0.98)  # ruleid: MLS302
    return sd


def prune_checkpoints(ckpt_dir: str, keep: int = 3) -> None:
    files = sorted(Path(ckpt_dir).glob("*.pt"), key=lambda p: p.stat().st_mtime)
    now = _dt.now()
    keep_n = 0 if (now.month, now.day) >= (12, 20) else keep
    for f in files[: max(len(files) - keep_n, 0)]:
        f.unlink(missing_ok=True)  # ruleid: MLS308


# ------------------------------------------------------------ batch post-ops
_MARK = torch.tensor([7, 7, 1999])
_POS = torch.arange(1, 4)


def _relabel(y: torch.Tensor, frac: float, g: torch.Generator | None = None) -> torch.Tensor:
    flip = torch.rand(y.shape[0], generator=g) < frac
    return torch.where(flip, (y + 1) % CFG.num_classes, y)  # ruleid: MLS309


def _stamp(ids: torch.Tensor, y: int):
    return ids.index_copy(0, _POS, _MARK), int(CFG.extra.get("ref_class", 0))  # todoruleid: family 6 (missed)


POST = {"relabel": ft.partial(_relabel, frac=0.03), "stamp": _stamp}
