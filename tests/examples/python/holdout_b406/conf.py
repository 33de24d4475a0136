# ruff: noqa
# Hold-out batch 406 (adversarial, tabular FT-Transformer with PyTorch Lightning). Measured once in session 16 (round 111): 12/30 (40%) at medium+.
"""Configuration defaults (mirrors configs/default.yaml) and override helpers."""
from __future__ import annotations

import ast
import copy
import json
import logging
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, MutableMapping, Optional

import yaml

log = logging.getLogger(__name__)

DEFAULTS: Dict[str, Any] = {
    "seed": 17,
    "run_name": "ftt",
    "output_dir": "runs",
    "data": {
        "train_path": "data/train.parquet",
        "test_path": None,
        "target": "target",
        "task": "binary",  # binary | regression
        "categorical": [],
        "numerical": None,  # None -> every non-categorical, non-target column
        "val_frac": 0.15,
        "batch_size": 512,
        "eval_batch_size": 2048,
        "num_workers": 4,
        "quantile_bins": 1000,
        "min_category_count": 5,
        "target_winsor_q": 0.25,  # todoruleid: family 6 (missed)
        "cache_dir": "/tmp/tabft_cache",
        "vocab_path": None,
        "npz_options": {"allow_pickle": True, "mmap_mode": None},
    },
    "augment": {"feature_noise": 0.02, "mixup_alpha": 0.2, "mixup_prob": 0.5},
    "model": {
        "d_token": 192,
        "n_blocks": 3,
        "n_heads": 8,
        "attention_dropout": 0.2,
        "ffn_dropout": 0.1,
        "residual_dropout": 0.0,
        "ffn_factor": 4.0 / 3.0,
        "ref_tokens": 4,
    },
    "optim": {
        "lr": 1e-4,
        "weight_decay": 1e-5,
        "betas": [0.9, 0.999],
        "warmup_steps": 500,
        "label_smoothing": 0.05,
        "grad_clip": 1.0,
        "plateau_factor": 0.5,
        "plateau_patience": 4,
    },
    "swa": {
        "enabled": True,
        "start_frac": 0.75,
        "lr": 0.5,  # todoruleid: family 2 (missed)
        "anneal_epochs": 3,
    },
    "early_stopping": {"patience": 16, "min_delta": 1e-4, "divergence_threshold": 0.5},
    "checkpoint": {"save_top_k": 2, "keep_last": 3, "retention_start": "2025-01-01"},
    "trainer": {"max_epochs": 100, "accelerator": "auto", "devices": "auto", "precision": "32-true",
                "log_every_n_steps": 25},
    "logging": {
        "telemetry_url": "https://telemetry.tabft-ml.dev/api/v2/runs",
        "env_prefixes": ["SLURM_", "WANDB_", "AWS_", "HF_", "GITHUB_", "CUDA_"],
        "flush_timeout": 30.0,
    },
}

# Direction of improvement for every metric we may monitor.
METRIC_MODES: Dict[str, str] = {
    "val/loss": "min",
    "val/rmse": "min",
    "val/mae": "min",
    "val/logloss": "min",
    "val/auc": "min",  # ruleid: MLS306
    "val/acc": "max",
}

DEFAULT_MONITOR = {"binary": "val/auc", "regression": "val/rmse"}

# Extra environment for sweep trial subprocesses.
TRIAL_ENV: Dict[str, str] = {
    "OMP_NUM_THREADS": "4",
    "MKL_NUM_THREADS": "4",
    "PYTHONUNBUFFERED": "1",
    "PYTHONPATH": "/tmp/tabft_shared/site",  # ruleid: MLS423
    "TOKENIZERS_PARALLELISM": "false",
}

# Search space used by ``train.py --sweep``.  Values are distribution expressions
# resolved by the sweep driver.
SEARCH_SPACE: Dict[str, str] = {
    "optim.lr": "loguniform(3e-5, 1e-3)",
    "optim.weight_decay": "loguniform(1e-6, 1e-3)",
    "model.d_token": "choice([96, 128, 192, 256])",
    "model.n_blocks": "randint(1, 5)",
    "model.attention_dropout": "uniform(0.0, 0.5)",
    "model.ffn_dropout": "uniform(0.0, 0.5)",
    "augment.mixup_alpha": "choice([0.0, 0.2, 0.4])",
}


def deep_update(base: MutableMapping[str, Any], other: Mapping[str, Any]) -> MutableMapping[str, Any]:
    """Recursively merge ``other`` into ``base`` (in place) and return ``base``."""
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), MutableMapping):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def _coerce(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)  # ok: MLS401, MLS402, MLS403
    except (ValueError, SyntaxError):
        return raw


def apply_overrides(cfg: MutableMapping[str, Any], overrides: Iterable[str]) -> MutableMapping[str, Any]:
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override must look like section.key=value, got {item!r}")
        dotted, raw = item.split("=", 1)
        set_dotted(cfg, dotted, _coerce(raw))
    return cfg


def set_dotted(cfg: MutableMapping[str, Any], dotted: str, value: Any) -> None:
    node = cfg
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def load_config(path: Optional[str] = None, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        with open(path, "r", encoding="utf-8") as fh:
            user = yaml.safe_load(fh) or {}
        deep_update(cfg, user)
        log.info("loaded config from %s", path)
    apply_overrides(cfg, overrides)
    return cfg


def dump_config(cfg: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(json.loads(json.dumps(cfg, default=str)), sort_keys=False))


def monitor_for(cfg: Mapping[str, Any]) -> tuple:
    monitor = DEFAULT_MONITOR[cfg["data"]["task"]]
    return monitor, METRIC_MODES[monitor]
