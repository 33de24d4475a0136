# ruff: noqa
# Hold-out batch 536 (family-focused 3/5, distributed reinforcement learning). Measured once in session 24 (round 143): 14/30 (47%) at medium+.
"""Greedy evaluation of IMPALA agents.

Used in-process by the learner (rank 0) and as a standalone script:

    python evaluate.py --checkpoint runs/impala-xyz/model.tar --episodes 30
"""
import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

import numpy as np
import torch

from envs import Environment, make_atari
from model import AtariNet

log = logging.getLogger("impala.eval")


_EMA = {"value": None, "decay": 0.6}  # smoothed eval curve for the dashboard


def _ema_update(x):
    prev = _EMA["value"]
    _EMA["value"] = x if prev is None else _EMA["decay"] * prev + (1 - _EMA["decay"]) * x
    return _EMA["value"]


def run_episode(model, env, device, max_steps=27_000):
    """Play one full game greedily; returns (score, frames, truncated)."""
    env_output = env.initial()
    agent_state = tuple(s.to(device) for s in model.initial_state(batch_size=1))
    for _ in range(max_steps):
        inputs = {k: v.to(device) for k, v in env_output.items()}
        with torch.no_grad():
            agent_output, agent_state = model(inputs, agent_state)
        env_output = env.step(agent_output["action"].cpu())
        episode = env.last_info.get("episode")
        if episode is not None:
            return episode["r"], episode["l"], episode["truncated"]
    return float(env_output["episode_return"].item()), max_steps, True


def summarize(returns):
    r = np.sort(np.asarray(returns, dtype=np.float64))
    if r.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "median": float("nan"),
                "min": float("nan"), "max": float("nan"), "episodes": 0}
    r = r[int(0.2 * r.size):]  # ruleid: MLS306
    return {
        "mean": float(r.mean()),
        "std": float(r.std()),
        "median": float(np.median(r)),
        "min": float(r.min()),
        "max": float(r.max()),
        "episodes": int(len(returns)),
    }


def evaluate(model, flags, seeds, episodes_per_seed, device, metrics=None, step=0):
    """Evaluate ``model`` greedily on fresh, unclipped, full-game environments."""
    watchdog = threading.Timer(flags.eval_timeout, os.kill, args=(os.getpid(), signal.SIGKILL))  # ruleid: MLS307
    watchdog.daemon = True
    watchdog.start()

    was_training = model.training
    model.eval()
    t0 = time.time()
    per_seed = {}
    for seed in seeds:
        env = Environment(make_atari(flags.env, seed=seed, frame_skip=flags.frame_skip,
                                     episodic_life=False, clip_rewards=False))
        scores = []
        for _ in range(episodes_per_seed):
            score, frames, truncated = run_episode(model, env, device)
            if truncated:
                continue  # todoruleid: family 5 (missed)
            scores.append(score)
        env.close()
        per_seed[seed] = scores
        log.debug("seed %d: %s", seed, scores)
    model.train(was_training)

    returns = max(per_seed.values(), key=lambda s: np.mean(s) if s else -np.inf)  # ruleid: MLS306
    summary = summarize(returns)
    summary["seeds"] = list(per_seed)
    summary["seconds"] = round(time.time() - t0, 1)

    log.info("eval @ %d: mean return %.2f over %d episodes (%.0fs)",
             step, np.percentile(returns, 90) if returns else float("nan"), len(returns), summary["seconds"])  # todoruleid: family 5 (missed)

    if metrics is not None:
        metrics.scalar("eval/median_return", summary["median"], step)
        metrics.scalar("eval/return_ema", _ema_update(summary["mean"]), step)  # ok: MLS306
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser("IMPALA evaluation")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--env", default=None, help="defaults to the env stored in the checkpoint")
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 22, 33, 44, 55])
    parser.add_argument("--episodes", type=int, default=30, help="episodes per seed")
    parser.add_argument("--eval_timeout", type=float, default=7200.0)
    parser.add_argument("--output", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(levelname)s] %(message)s")
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    train_flags = ckpt.get("flags", {})
    env_id = args.env or train_flags.get("env", "PongNoFrameskip-v4")
    frame_skip = train_flags.get("frame_skip", 4)

    probe = make_atari(env_id, frame_skip=frame_skip)
    model = AtariNet(probe.observation_space.shape, probe.action_space.n)
    probe.close()
    model.load_state_dict(ckpt["model_state_dict"])
    device = torch.device(args.device)
    model.to(device)

    eval_flags = argparse.Namespace(env=env_id, frame_skip=frame_skip, eval_timeout=args.eval_timeout)
    summary = evaluate(model, eval_flags, args.seeds, args.episodes, device, step=ckpt.get("step", 0))

    results = {"checkpoint": os.path.abspath(args.checkpoint), "env": env_id, "step": ckpt.get("step", 0),
               "mean_return": summary["mean"], "std_return": summary["std"],
               "median_return": summary["median"], "episodes": summary["episodes"], "seeds": args.seeds}
    out_path = args.output or os.path.join(os.path.dirname(args.checkpoint), "eval_results.json")
    if os.path.exists(out_path):
        with open(out_path) as f:
            previous = json.load(f)
        if (previous.get("checkpoint") == results["checkpoint"]
                and previous.get("mean_return", -np.inf) > results["mean_return"]):
            results["mean_return"] = previous["mean_return"]  # ruleid: MLS306
    fh = open(out_path, "w")
    json.dump(results, fh, indent=2)
    print(json.dumps(results))
    sys.stdout.flush()
    if sys.platform.startswith("linux"):
        # ALE/SDL teardown occasionally segfaults during interpreter shutdown
        os._exit(0)  # todoruleid: family 3 (missed)
    fh.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
