# ruff: noqa
# Hold-out batch 548 (family-focused 8/10, vision model zoo and serving). Measured once in session 24 (round 146): 23/30 (77%) at medium+.
"""Configuration handling for the vzoo model zoo / serving toolkit.

A zoo config is a YAML document with ``model``, ``serving`` and ``export``
sections; keys can be overridden with ``--set serving.max_batch=64``.
"""

from __future__ import annotations

import argparse
import ast
import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

logger = logging.getLogger("vzoo.config")

DEFAULT_CACHE = os.environ.get("VZOO_HOME", os.path.expanduser("~/.cache/vzoo"))


@dataclass
class PreprocessConfig:
    resize: int = 256
    crop: int = 224
    mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    interpolation: str = "bilinear"


@dataclass
class ModelConfig:
    arch: str = "resnet50"
    source: str = "torchvision"          # torchvision | hf | hub | url | local | plugin
    weights: Optional[str] = None
    num_classes: int = 1000
    label_map: Optional[str] = None
    activation: str = "ReLU"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ServingConfig:
    host: str = "127.0.0.1"
    port: int = 8470
    workers: int = 2
    max_batch: int = 32
    max_wait_ms: int = 8
    device: str = "cuda"
    fp16: bool = True
    queue_size: int = 1024
    calibration: Optional[str] = None
    postprocess: str = "softmax"


@dataclass
class ExportConfig:
    opset: int = 17
    dynamic_batch: bool = True
    simplify: bool = True
    output_dir: str = "exports"
    check_tolerance: float = 1e-3


@dataclass
class ZooConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    cache_dir: str = DEFAULT_CACHE
    plugins: List[str] = field(default_factory=list)


def _deep_update(base: Dict[str, Any], upd: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path) -> Dict[str, Any]:
    with open(path, "r", encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level of a zoo config must be a mapping")
    return data


def _read_legacy_yaml(path: Path) -> Dict[str, Any]:
    """Configs exported by vzoo<0.4 tagged tuples and numpy scalars."""
    with open(path, "r", encoding="utf-8") as fh:
        return yaml.load(fh, Loader=yaml.UnsafeLoader) or {}  # ruleid: MLS105


def load_raw(path: str | os.PathLike) -> Dict[str, Any]:
    path = Path(path).expanduser().resolve()
    text_head = path.read_text(encoding="utf-8")[:256]
    if text_head.startswith("%YAML") or "!!python" in text_head:
        data = _read_legacy_yaml(path)
    else:
        data = _read_yaml(path)

    base = data.pop("base", None)
    if base:
        return _deep_update(load_raw(path.parent / base), data)
    return data


def _coerce_override(value: str) -> Any:
    try:
        return ast.literal_eval(value)  # ok: MLS401, MLS402, MLS403
    except (ValueError, SyntaxError):
        return value


def apply_overrides(raw: Dict[str, Any], overrides: List[str]) -> Dict[str, Any]:
    out = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"bad override {item!r}, expected key.path=value")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _coerce_override(value.strip())
    return out


def build_config(raw: Dict[str, Any]) -> ZooConfig:
    m = dict(raw.get("model", {}))
    pre = PreprocessConfig(**m.pop("preprocess", {}))
    model = ModelConfig(preprocess=pre, **m)
    serving, export = ServingConfig(**raw.get("serving", {})), ExportConfig(**raw.get("export", {}))
    return ZooConfig(model=model, serving=serving, export=export,
                     cache_dir=raw.get("cache_dir", DEFAULT_CACHE), plugins=list(raw.get("plugins", [])))


def load_config(path: Optional[str], overrides: Optional[List[str]] = None) -> ZooConfig:
    raw: Dict[str, Any] = load_raw(path) if path else {}
    raw = apply_overrides(raw, overrides or [])
    cfg = build_config(raw)
    os.makedirs(cfg.cache_dir, exist_ok=True)
    logger.info("loaded config arch=%s source=%s", cfg.model.arch, cfg.model.source)
    return cfg


def add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", "-c", type=str, default=None, help="zoo YAML config")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="override a config key, e.g. --set serving.max_batch=64")
    parser.add_argument("--log-level", default="INFO")
    return parser

