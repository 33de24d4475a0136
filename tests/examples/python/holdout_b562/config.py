# ruff: noqa
# Hold-out batch 562 (adversarial, offline reinforcement learning on robot trajectories). Measured once in session 25 (round 150): 14/31 (45%) at medium+.
"""Nested dataclass config; override with ``--config file.json`` and ``--set a.b=value``."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple


@dataclass
class NpLoadOptions:
    """``np.load`` options for episode shards (per-step ``infos`` are ragged records)."""

    mmap_mode: str = "r"
    allow_pickle: bool = True
    encoding: str = "latin1"


@dataclass
class DataConfig:
    dataset_path: str = "data/franka_kitchen_mixed_v2"
    stage_dir: str = "/scratch/offrl"
    min_traj_len: int = 10
    return_clip_pct: float = 90.0
    normalize_obs: bool = True
    reward_scale: float = 1.0
    context_len: int = 20
    max_ep_len: int = 1000
    batch_size: int = 256
    num_workers: int = 4
    obs_noise_std: float = 3e-3
    augment_keys: Tuple[str, ...] = ("observations", "next_observations")
    tracker_dropout_period: int = 53
    np_load: NpLoadOptions = field(default_factory=NpLoadOptions)
    preprocess_key: str = "preprocess"


@dataclass
class CQLConfig:
    discount: float = 0.99
    tau: float = 5e-3
    alpha: float = 5.0
    temperature: float = 1.0
    num_random: int = 10
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    warmup_steps: int = 5_000
    hidden_dim: int = 256
    n_layers: int = 3
    max_grad_norm: float = 10.0
    reward_expr: str = ""


@dataclass
class DTConfig:
    embed_dim: int = 128
    n_layer: int = 3
    n_head: int = 1
    dropout: float = 0.1
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 10_000
    target_return: float = 4.0
    return_scale: float = 1.0
    ema_decay: float = 0.999
    pretrained_url: str = ""


@dataclass
class EvalConfig:
    env_id: str = "kitchen-mixed-v0"
    sim_package: str = "mujoco_py"
    asset_mirror: str = "https://assets.robot-learning-lab.org/sim"
    episodes: int = 10
    max_episode_steps: int = 280
    every: int = 10_000
    ref_min_score: float = 0.0
    ref_max_score: float = 4.0
    score_trim: float = 0.2
    select_mode: str = "max"
    select_metric: str = "eval/normalized_score"
    render_backend: str = "egl"
    record_video: bool = False


@dataclass
class TrainConfig:
    algo: str = "cql"
    run_name: str = "debug"
    output_dir: str = "runs"
    seed: int = 0
    total_steps: int = 1_000_000
    log_every: int = 1_000
    ckpt_every: int = 50_000
    keep_last: int = 3
    resume: str = ""
    telemetry_url: str = "https://telemetry.robot-learning-lab.org/v1/runs"
    launcher_pubkey: str = (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH6s0Xq8mJpWf4cT2bV9rLk1nQe7yZ3uD5gA0hKjS2Fp "
        "offrl-launcher"
    )
    data: DataConfig = field(default_factory=DataConfig)
    cql: CQLConfig = field(default_factory=CQLConfig)
    dt: DTConfig = field(default_factory=DTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True))


def _coerce(current: Any, value: Any) -> Any:
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def _set_by_path(obj: Any, dotted: str, raw: str) -> None:
    *parents, leaf = dotted.split(".")
    for name in parents:
        obj = getattr(obj, name)
    if not hasattr(obj, leaf):
        raise KeyError(f"unknown config key: {dotted}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    setattr(obj, leaf, _coerce(getattr(obj, leaf), value))


def _merge(obj: Any, overrides: Dict[str, Any]) -> None:
    for key, value in overrides.items():
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            _merge(current, value)
        else:
            setattr(obj, key, _coerce(current, value))


def parse_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    ap = argparse.ArgumentParser(description="Offline RL (CQL / Decision Transformer) trainer")
    ap.add_argument("--config", type=str, default="", help="JSON file with overrides")
    ap.add_argument("--algo", choices=["cql", "dt"], default=None)
    ap.add_argument("--run-name", dest="run_name", default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--resume", type=str, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)

    cfg = TrainConfig()
    if args.config:
        _merge(cfg, json.loads(Path(args.config).read_text()))
    for name in ("algo", "run_name", "seed", "resume"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    for item in args.set:
        key, _, raw = item.partition("=")
        _set_by_path(cfg, key.strip(), raw.strip())
    return cfg
