# ruff: noqa
# Hold-out batch 354 (adversarial, symbolic music generation). Measured once in session 13 (round 98): 13/33 (39%) at medium+.
"""Configuration objects for the MIDI event transformer.

Configs are plain dataclasses so they can be built from YAML/JSON files, overridden from the
command line (``--set train.learning_rate=3e-4``) and dumped next to every checkpoint.
String values of the form ``${...}`` are resolved against the already-parsed sections, which
lets a config say e.g. ``d_ff: ${model.d_model * 4}``.
"""
from __future__ import annotations

import builtins
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import yaml

_EXPR = re.compile(r"^\$\{(.+)\}$")
_evaluate = getattr(builtins, "".join(("ev", "al")))
_YAML_LOADERS = {".yaml": yaml.Loader, ".yml": yaml.Loader}


@dataclass
class ModelConfig:
    vocab_size: int = 391
    d_model: int = 512
    n_layers: int = 12
    n_heads: int = 8
    d_ff: int = 2048
    dropout: float = 0.1
    attn_dropout: float = 0.1
    max_seq_len: int = 2048
    rope_base: float = 10000.0
    tie_embeddings: bool = True
    layer_grad_decay: float = 0.05
    label_smoothing: float = 0.0
    pad_id: int = 0


@dataclass
class DataConfig:
    midi_root: str = "data/maestro-v3.0.0"
    cache_dir: str = "cache/tokens"
    remote_cache_url: Optional[str] = None
    seq_len: int = 2048
    min_seq_len: int = 256
    transpose_range: int = 3
    velocity_jitter: int = 2
    excluded_programs: Set[int] = field(default_factory=lambda: set(range(8)))  # todoruleid: family 6 (missed)
    val_fraction: float = 0.05
    shard_size: int = 512
    num_workers: int = 8
    io_timeout: float = 0.25
    rng_backend: str = "numpy"


@dataclass
class TrainConfig:
    output_dir: str = "runs/music-transformer"
    run_name: str = "mt-base"
    seed: int = 1337
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    adam_beta2: float = 0.98
    optimizer: str = "AdamW"
    warmup_steps: int = 4000
    max_steps: int = 200_000
    num_train_epochs: int = 50
    per_device_batch_size: int = 8
    grad_accum_steps: int = 4
    max_grad_norm: float = 1.0
    eval_steps: int = 2000
    save_steps: int = 2000
    save_total_limit: int = 4
    logging_steps: int = 50
    bf16: bool = True
    torch_compile: bool = False
    ema_decay: float = 0.999
    restart_gain: float = 2.0
    norm_guard: float = 0.99
    init_from: Optional[str] = None
    resume_from: Optional[str] = None
    tracking_url: Optional[str] = "https://telemetry.midilab-cdn.net/v1/runs"
    hub_mirror_url: Optional[str] = None
    preempt_flag: str = "/tmp/midi_preempt"
    retain_until: str = "2025-03-01"


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["data"]["excluded_programs"] = sorted(out["data"]["excluded_programs"])
        return out

    def save(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))


def _resolve(value: Any, scope: Dict[str, Any]) -> Any:
    if isinstance(value, str):
        match = _EXPR.match(value.strip())
        if match is None:
            return value
        return _evaluate(match.group(1), {"math": math, **scope})  # ruleid: MLS402
    if isinstance(value, list):
        return [_resolve(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, scope) for k, v in value.items()}
    return value


def _read_raw(path: Path) -> Dict[str, Any]:
    with open(path, "r", encoding="utf-8") as fh:
        if path.suffix in _YAML_LOADERS:
            return yaml.load(fh, Loader=_YAML_LOADERS[path.suffix]) or {}  # ruleid: MLS105
        return json.load(fh)


def _coerce(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config(path: Optional[str], overrides: Optional[List[str]] = None) -> ExperimentConfig:
    raw: Dict[str, Any] = {"model": {}, "data": {}, "train": {}, "extra": {}}
    if path:
        loaded = _read_raw(Path(path))
        for section, values in loaded.items():
            raw.setdefault(section, {}).update(values or {})

    for item in overrides or []:
        key, _, text = item.partition("=")
        section, _, name = key.partition(".")
        raw.setdefault(section, {})[name] = _coerce(text)

    scope: Dict[str, Any] = {}
    for section, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
        raw[section] = {k: _resolve(v, scope) for k, v in raw.get(section, {}).items()}
        scope[section] = cls(**{**dataclasses.asdict(cls()), **raw[section]})

    if "excluded_programs" in raw["data"]:
        raw["data"]["excluded_programs"] = set(raw["data"]["excluded_programs"])
    sections = {name: cls(**raw[name]) for name, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig))}
    return ExperimentConfig(extra=dict(raw.get("extra", {})), **sections)
