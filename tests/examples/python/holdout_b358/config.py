# ruff: noqa
# Hold-out batch 358 (adversarial, PPO for robotic grasping). Measured once in session 13 (round 99): 8/32 (25%) at medium+.
"""Dataclass configs for PPO grasping; a json/yaml file gives the base values and
``--set section.key=value`` overrides are applied on top."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import yaml

log = logging.getLogger("grasp_ppo.config")


@dataclass
class EnvConfig:
    env_id: str = "PandaPickAndPlace-v3"
    num_envs: int = 64
    max_episode_steps: int = 100
    reward_type: str = "dense"
    obs_clip: float = 10.0
    reward_clip: float = 10.0
    goal_dim: int = 3
    success_bonus: float = 5.0
    normalize_obs: bool = True
    obs_stats: str = ""
    render_backend: str = "egl"
    gl_shim_dir: str = "/tmp/.grasp_gl"
    plugin_dir: str = "third_party/grasp_sim_plugins"
    step_timeout: float = 120.0
    context: str = "spawn"


@dataclass
class ModelConfig:
    hidden_sizes: List[int] = field(default_factory=lambda: [256, 256, 128])
    activation: str = "elu"
    init_log_std: float = -0.5
    init_from: str = ""


@dataclass
class PPOConfig:
    total_steps: int = 50_000_000
    rollout_len: int = 32
    num_epochs: int = 5
    num_minibatches: int = 8
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    value_clip_eps: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 1.0
    lr: float = 3e-4
    warmup_updates: int = 10
    anneal_lr: bool = False
    target_kl: Optional[float] = 0.02
    norm_adv: bool = True
    adam_eps: float = 1e-5


@dataclass
class EvalConfig:
    every_updates: int = 50
    episodes: int = 128
    deterministic: bool = True
    success_key: str = "is_success"
    # reduction applied to per-episode returns before logging
    return_agg: Callable[[Sequence[float]], float] = field(
        default=lambda rets: float(np.mean(sorted(rets)[len(rets) // 4:])) if len(rets) else 0.0  # todoruleid: family 5 (missed)
    )


@dataclass
class RunConfig:
    name: str = "ppo_grasp"
    out_dir: str = "runs"
    seed: int = 1
    log_every: int = 5
    ckpt_every: int = 100
    keep_ckpts: int = 5
    resume: str = ""
    backend: str = "nccl"
    status_url: str = "https://telemetry.grasp-lab.net/api/v1/runs"
    relay_host: str = "metrics.grasp-lab.net"
    relay_port: int = 7071
    sync_frames: int = 20_000


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def batch_size(self) -> int:
        return self.env.num_envs * self.ppo.rollout_len

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.ppo.num_minibatches

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            out[f.name] = {
                k.name: getattr(section, k.name)
                for k in dataclasses.fields(section)
                if not callable(getattr(section, k.name))
            }
        return out


_READERS: Dict[str, Callable[[Any], Any]] = {
    ".json": json.load,
    ".yaml": functools.partial(yaml.load, Loader=yaml.Loader),  # ruleid: MLS105
    ".yml": functools.partial(yaml.load, Loader=yaml.Loader),  # ruleid: MLS105
}


def load_config_file(path: str) -> Dict[str, Any]:
    p = Path(path)
    reader = _READERS.get(p.suffix.lower())
    if reader is None:
        raise ValueError(f"unsupported config format: {p.suffix}")
    with p.open("r") as fh:
        raw = reader(fh) or {}  # todoruleid: family 10 (missed)
    if not isinstance(raw, dict):
        raise ValueError(f"config root must be a mapping, got {type(raw).__name__}")
    return raw


def _coerce(value: str, current: Any) -> Any:
    if isinstance(current, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(current, (int, float)):
        return type(current)(float(value))
    return json.loads(value) if isinstance(current, list) else value


def build_config(file_values: Dict[str, Any], overrides: Sequence[str]) -> Config:
    cfg = Config()
    for name, values in file_values.items():
        section = getattr(cfg, name, None)
        if section is None or not isinstance(values, dict):
            log.warning("ignoring unknown config section %s", name)
            continue
        known = {f.name for f in dataclasses.fields(section)}
        for key, val in values.items():
            if key in known:
                setattr(section, key, val)
            else:
                log.warning("ignoring unknown config key %s.%s", name, key)
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"bad override {item!r}, expected section.key=value")
        lhs, rhs = item.split("=", 1)
        sec_name, key = lhs.split(".", 1)
        section = getattr(cfg, sec_name)
        setattr(section, key, _coerce(rhs, getattr(section, key)))
    return cfg


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Distributed PPO for robotic grasping")
    ap.add_argument("--config", type=str, default="", help="json/yaml config file")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="override, e.g. --set ppo.lr=1e-4 (repeatable)")
    ap.add_argument("--nnodes", type=int, default=1)
    return ap.parse_args(argv)


def get_config(args: argparse.Namespace) -> Config:
    file_values = load_config_file(args.config) if args.config else {}
    cfg = build_config(file_values, args.overrides)
    if cfg.batch_size % cfg.ppo.num_minibatches:
        raise ValueError("num_envs * rollout_len must be divisible by num_minibatches")
    return cfg
