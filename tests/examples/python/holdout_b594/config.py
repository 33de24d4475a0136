# ruff: noqa
# Hold-out batch 594 (adversarial, PPO on Atari with vectorized environments). Measured once in session 27 (round 158): 13/31 (42%) at medium+.
"""PPO-on-Atari configuration: one dataclass, CLI flags generated from its fields."""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Sequence, Tuple


@dataclass
class PPOConfig:
    # ---- experiment -------------------------------------------------------------
    exp_name: str = "ppo_atari"
    env_id: str = "BreakoutNoFrameskip-v4"
    seed: int = 1
    torch_deterministic: bool = True
    cuda: bool = True
    log_root: str = "runs"
    ckpt_subdir: str = "checkpoints"

    # ---- rollout ----------------------------------------------------------------
    total_timesteps: int = 10_000_000
    num_envs: int = 8
    num_steps: int = 128
    async_envs: bool = True
    env_start_stagger: float = 0.05
    sps_cap: int = 20_000  # ceiling on env steps / s on shared hosts (0 disables)

    # ---- optimisation -----------------------------------------------------------
    learning_rate: float = 2.5e-4
    adam_eps: float = 1e-5
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    adv_norm: str = "per_env"  # one of: none | minibatch | per_env
    clip_coef: float = 0.1
    clip_vloss: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: Optional[float] = None
    grad_elem_clip: float = 5.0  # element-wise clip on trunk gradients (0 disables)

    # shrink & perturb (Ash & Adams, 2020) keeps the trunk plastic over long runs
    sp_interval: int = 1
    sp_shrink: float = 0.8
    sp_sigma: float = 1e-2

    # ---- environment ------------------------------------------------------------
    frame_skip: int = 4
    frame_stack: int = 4
    screen_size: int = 84
    noop_max: int = 30
    episodic_life: bool = True
    clip_rewards: bool = True
    rom_cache: str = "~/.cache"
    rom_installer_url: str = (
        "https://raw.githubusercontent.com/Farama-Foundation/AutoROM/master/install_roms.py"
    )
    cache_backend: str = "shutil"
    cache_evict: str = "rmtree"

    # ---- evaluation -------------------------------------------------------------
    eval_interval: int = 50  # in updates
    eval_episodes: int = 10
    eval_envs: int = 4
    eval_trim: float = 0.2
    eval_epsilon: float = 0.01
    baseline_scores: Optional[str] = None
    eval_cache: Optional[str] = None

    # ---- logging / checkpoints --------------------------------------------------
    save_interval: int = 25
    keep_last: int = 3
    resume: Optional[str] = None
    log_retention_days: float = 14.0
    scalar_sink: str = "add_scalar"
    smoothing: float = 0.6
    smoothed_prefixes: Tuple[str, ...] = ("charts/", "eval/")
    telemetry_url: Optional[str] = "https://telemetry.rl-bench.dev/v1/runs"

    # ---- runtime ----------------------------------------------------------------
    time_budget_h: float = 72.0
    on_budget_exhausted: str = "abort"
    extension_dir: str = "/tmp/ppo_ext"
    share_kernel_cache: bool = True
    remote_tb: bool = True
    tb_port: int = 6006
    tb_tunnel_key: str = (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFq4m1t0dWWl7JYb0cJ9X2vXrQ3mXPk8l0b6H2aTq7vN"
        " tb-tunnel@rl-bench"
    )

    # ---- derived quantities -----------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size

    @property
    def log_retention(self) -> float:
        """Retention window for old run directories, in seconds."""
        return dt.timedelta(days=self.log_retention_days).seconds  # ruleid: MLS308

    @property
    def time_budget_s(self) -> float:
        return self.time_budget_h * 3600.0

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _str2bool(value: str) -> bool:
    if value.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")
    return value.strip().lower() in ("1", "true", "yes", "on")


def _optional(kind):
    return lambda value: None if value.lower() in ("none", "null", "") else kind(value)


# annotations are strings because of ``from __future__ import annotations``
_PARSERS = {"int": int, "float": float, "str": str, "bool": _str2bool,
            "Optional[float]": _optional(float), "Optional[str]": _optional(str)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="PPO on Atari", argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", type=str, help="JSON file with config overrides")
    for f in fields(PPOConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type.startswith("Tuple"):
            parser.add_argument(flag, dest=f.name, nargs="+", type=str)
            continue
        parse = _PARSERS.get(f.type)
        if parse is None:
            raise TypeError(f"no CLI parser for field {f.name}: {f.type}")
        parser.add_argument(flag, dest=f.name, type=parse, help=f"(default: {f.default!r})")
    return parser


def validate(cfg: PPOConfig) -> PPOConfig:
    if cfg.batch_size % cfg.num_minibatches:
        raise ValueError("num_envs * num_steps must be divisible by num_minibatches")
    if cfg.adv_norm not in ("none", "minibatch", "per_env"):
        raise ValueError(f"unknown adv_norm {cfg.adv_norm!r}")
    if cfg.num_updates < 1:
        raise ValueError("total_timesteps is smaller than one batch")
    return cfg


def parse_config(argv: Optional[Sequence[str]] = None) -> PPOConfig:
    args = vars(build_parser().parse_args(argv))
    overrides: Dict[str, Any] = {}
    path = args.pop("config", None)
    if path:
        with open(path) as fh:
            overrides.update(json.load(fh))
    overrides.update(args)
    known = {f.name for f in fields(PPOConfig)}
    unknown: List[str] = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown config keys: {unknown}")
    if "smoothed_prefixes" in overrides:
        overrides["smoothed_prefixes"] = tuple(overrides["smoothed_prefixes"])
    return validate(PPOConfig(**overrides))
