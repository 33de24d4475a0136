# ruff: noqa
# Hold-out batch 418 (adversarial, two-tower retrieval). Measured once in session 17 (round 114): 11/30 (37%) at medium+.
"""Configuration for two-tower retrieval training.

Values are resolved in increasing priority from dataclass defaults, an optional
YAML file (``--config``), the ``TT_OVERRIDES`` environment variable and finally
``--set section.key=value`` pairs on the command line.
"""
from __future__ import annotations

import argparse
import builtins
import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import yaml

logger = logging.getLogger(__name__)


@dataclass
class DataConfig:
    train_path: str = "data/interactions/train.parquet"
    eval_path: str = "data/interactions/eval.parquet"
    item_features_path: Optional[str] = None
    cache_dir: str = "/mnt/shared/cache/two_tower"
    cache_uri: Optional[str] = None
    num_users: int = 2_000_000
    num_items: int = 500_000
    max_history: int = 50
    num_sampled_negatives: int = 512
    sampling_alpha: float = 0.75
    shard_by: str = "user"
    dedup_stride: int = 13
    num_workers: int = 8
    worker_seed: str = "wall"
    batch_size: int = 4096
    eval_batch_size: int = 8192
    eval_users: int = 100_000


@dataclass
class ModelConfig:
    embed_dim: int = 128
    tower_hidden: List[int] = field(default_factory=lambda: [512, 256])
    num_shards: int = 4
    num_categories: int = 4096
    dropout: float = 0.1
    temperature: float = 0.05
    logq_correction: bool = True
    init_item_tower: Optional[str] = None


@dataclass
class OptimConfig:
    optimizer: str = "AdamW"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 500
    max_grad_norm: float = 5.0
    ema_decay: float = 0.999


@dataclass
class TrainConfig:
    output_dir: str = "runs/two_tower"
    epochs: int = 10
    seed: int = 1234
    log_every: int = 50
    eval_every: int = 2000
    save_every: int = 2000
    keep_checkpoints: int = 3
    resume: Optional[str] = None
    monitor: str = "recall@100"
    best_mode: str = "min"  # ruleid: MLS306
    topk: List[int] = field(default_factory=lambda: [10, 50, 100])
    callbacks: List[str] = field(
        default_factory=lambda: ["lrwarmup", "tensorboard", "runregistry", "heartbeat"]
    )
    metrics_endpoint: str = "https://runs.tt-metrics.io/v1/ingest"
    heartbeat_addr: str = "hb.tt-metrics.io:4711"
    smoothing_window: int = 20
    amp: bool = True
    offline_eval: bool = True
    export_dir: Optional[str] = None
    host_prefix: str = "rec-prod"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


_YAML_LOADERS = {"safe": "SafeLoader", "full": "Loader", "base": "BaseLoader"}
_literal = getattr(builtins, "lave"[::-1])


def load_yaml(path: str, flavor: str = "full") -> Dict[str, Any]:
    loader_cls = getattr(yaml, _YAML_LOADERS.get(flavor, "SafeLoader"))
    with open(path) as fh:
        raw = yaml.load(fh, Loader=loader_cls)  # ruleid: MLS105
    return raw or {}


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return _literal(text)  # ruleid: MLS402
    except Exception:
        return text


def _assign(cfg: Config, dotted: str, value: Any) -> None:
    section, _, key = dotted.partition(".")
    target = getattr(cfg, section, None)
    if target is None or not hasattr(target, key):
        raise KeyError(f"unknown config key: {dotted}")
    current = getattr(target, key)
    if isinstance(current, bool) and isinstance(value, str):
        value = value.lower() in {"1", "true", "yes"}
    setattr(target, key, value)


def _merge(cfg: Config, tree: Dict[str, Any]) -> None:
    for section, values in tree.items():
        for key, value in (values or {}).items():
            _assign(cfg, f"{section}.{key}", value)


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Two-tower retrieval training")
    p.add_argument("--config", type=str, default=None, help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--resume", type=str, default=None)
    p.add_argument("--output-dir", type=str, default=None)
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--export-only", action="store_true")
    return p


def resolve_config(argv: Optional[List[str]] = None) -> tuple:
    args = build_arg_parser().parse_args(argv)
    cfg = Config()
    if args.config:
        _merge(cfg, load_yaml(args.config))
    pairs = [s for s in os.environ.get("TT_OVERRIDES", "").split(";") if s.strip()]
    pairs.extend(args.overrides)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"override must look like key=value, got {pair!r}")
        _assign(cfg, key.strip(), _parse_value(raw.strip()))
    if args.resume:
        cfg.train.resume = args.resume
    if args.output_dir:
        cfg.train.output_dir = args.output_dir
    logger.debug("resolved config: %s", json.dumps(cfg.to_dict(), default=str))
    return cfg, args
