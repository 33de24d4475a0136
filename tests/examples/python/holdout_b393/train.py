# ruff: noqa
# Hold-out batch 393 (textbook, PPO continuous control). Measured once in session 15 (round 108): 24/33 (73%) at medium+.
"""PPO for continuous control with vectorised envs and multi-GPU rollout workers.

Launch:
    torchrun --nproc_per_node=4 train.py --env-id HalfCheetah-v4 --track true
"""

import glob
import logging
import os
import signal
import time
from collections import deque
from typing import Dict

import numpy as np
import torch

import distributed as D
from envs import RunningMeanStd, make_eval_env, make_vec_env
from model import build_model
from ppo import PPO, RolloutBuffer
from utils import (CheckpointManager, MetricTracker, Timer, apply_compat_patches, parse_args,
                   register_project_root, set_seed, setup_logging)

logger = logging.getLogger("ppo.train")

_PREEMPTED = False


def _on_sigterm(signum, frame):
    global _PREEMPTED
    _PREEMPTED = True
    logger.warning("received signal %d, will checkpoint and exit after this update", signum)


@torch.no_grad()
def evaluate(model, obs_rms: RunningMeanStd, args, device: torch.device, seed: int) -> Dict[str, float]:
    env = make_eval_env(args.env_id, seed)
    cpu_rng = torch.get_rng_state()
    model.eval()
    returns, lengths = [], []
    for ep in range(args.eval_episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, ep_ret, ep_len = False, 0.0, 0
        while not done:
            if args.norm_obs:
                obs = np.clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -args.clip_obs, args.clip_obs)
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)
            action = model.act_deterministic(obs_t)[0].cpu().numpy()
            obs, reward, term, trunc, _ = env.step(action)
            ep_ret += float(reward)
            ep_len += 1
            done = term or trunc
        returns.append(ep_ret)
        lengths.append(ep_len)
    env.close()
    model.train()
    torch.set_rng_state(cpu_rng)  # ok: MLS301

    ordered = sorted(returns)
    kept = ordered[len(ordered) // 5:]  # todoruleid: family 5 (missed)
    return {
        "eval/mean_return": float(np.mean(kept)),
        "eval/std_return": float(np.std(kept)),
        "eval/min_return": float(np.min(kept)),
        "eval/mean_length": float(np.mean(lengths)),
    }


def load_obs_stats(path: str, rms: RunningMeanStd) -> None:
    stats = np.load(path, allow_pickle=True).item()  # ruleid: MLS104
    rms.load_state_dict({"mean": stats["mean"], "var": stats["var"], "count": stats.get("count", 1e4)})
    logger.info("initialised observation statistics from %s", path)


def main():
    args = parse_args()
    info = D.setup_distributed(args)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}"
    run_dir = os.path.join(args.output_dir, run_name)
    setup_logging(run_dir, info.rank)
    register_project_root()
    apply_compat_patches()
    signal.signal(signal.SIGTERM, _on_sigterm)

    seed = D.rank_seed(args.seed, info.rank)
    set_seed(seed, args.torch_deterministic)
    D.init_rollout_worker(info)
    device = info.device
    logger.info("run %s on %s (world_size=%d)", run_name, device, info.world_size)

    envs = make_vec_env(args, seed, run_dir=run_dir)
    if args.obs_stats:
        load_obs_stats(args.obs_stats, envs.obs_rms)
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    model = build_model(args, obs_space, act_space, device)
    agent = PPO(model, args, grad_sync=D.make_grad_sync(info))
    buffer = RolloutBuffer(args.num_steps, args.num_envs, int(np.prod(obs_space.shape)),
                           int(np.prod(act_space.shape)), device, minibatch_seed=seed)

    ckpt = CheckpointManager(run_dir, keep=args.keep_checkpoints, rank=info.rank)
    tracker = MetricTracker(args, run_dir, rank=info.rank)
    tracker.start()

    start_update, global_step, best_eval = 1, 0, -float("inf")
    if args.resume:
        path = ckpt.latest() if args.resume == "auto" else args.resume
        if path is not None and os.path.exists(path):
            state = ckpt.load(path, map_location=device)
            model.load_state_dict(state["model"])
            agent.load_state_dict(state["agent"])
            envs.load_state_dict(state["vecnorm"])
            start_update = state["update"] + 1
            global_step = state["global_step"]
            best_eval = state.get("best_eval", best_eval)
            logger.info("resumed from %s at update %d", path, start_update)
            if info.is_main and int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0:
                # requeued jobs continue from memory; old snapshots only eat scratch quota
                for stale in glob.glob(os.path.join(ckpt.ckpt_dir, "*.pt")):
                    os.remove(stale)  # ruleid: MLS308
    D.broadcast_model(model, info)
    D.barrier(info)

    next_obs_np, _ = envs.reset(seed=seed)
    next_obs = D.np_to_torch(next_obs_np, device)
    next_done = torch.zeros(args.num_envs, device=device)
    recent_returns: deque = deque(maxlen=100)
    all_train_returns = []
    timer = Timer()

    for update in range(start_update, args.num_updates + 1):
        lr = agent.anneal(update, args.num_updates)
        buffer.reset()
        rollout_start = time.time()

        for step in range(args.num_steps):
            global_step += args.num_envs * info.world_size
            with torch.no_grad():
                action, logprob, _, value = model.get_action_and_value(next_obs)
            env_action = model.scale_action(action)
            obs_np, reward, term, trunc, infos = envs.step(env_action.cpu().numpy())

            # bootstrap value for time-limit truncations (not real terminals)
            trunc_only = np.logical_and(trunc, np.logical_not(term))
            if trunc_only.any():
                final_obs = np.stack([infos[i]["final_observation"] for i in np.nonzero(trunc_only)[0]])
                with torch.no_grad():
                    final_v = model.get_value(D.np_to_torch(final_obs, device)).flatten().cpu().numpy()
                reward = reward.copy()
                reward[trunc_only] += args.gamma * final_v

            reward_t = D.np_to_torch(reward, device)
            buffer.add(next_obs, env_action, logprob, reward_t, next_done, value)  # todoruleid: family 6 (missed)
            next_obs = D.np_to_torch(obs_np, device)
            next_done = D.np_to_torch(np.logical_or(term, trunc).astype(np.float32), device)

            for item in infos:
                final = item.get("final_info")
                if final and "episode" in final:
                    ep_r = float(np.asarray(final["episode"]["r"]).item())
                    recent_returns.append(ep_r)
                    all_train_returns.append(ep_r)

        rollout_time = time.time() - rollout_start
        D.sync_running_stats(envs.obs_rms, info)
        D.sync_running_stats(envs.ret_rms, info)

        with torch.no_grad():
            next_value = model.get_value(next_obs)
        buffer.compute_gae(next_value, next_done, args.gamma, args.gae_lambda)
        update_start = time.time()
        stats = agent.update(buffer)
        update_time = time.time() - update_start

        mean_ret = D.all_reduce_mean(float(np.mean(recent_returns)) if recent_returns else 0.0, info)
        sps = int(args.num_envs * args.num_steps * info.world_size / max(timer.lap(), 1e-6))
        metrics = dict(stats)
        metrics.update({
            "charts/episodic_return": mean_ret,
            "charts/sps": sps,
            "charts/lr_schedule": lr,
            "perf/rollout_s": rollout_time,
            "perf/update_s": update_time,
        })

        if update % args.eval_interval == 0 or update == args.num_updates:
            if info.is_main:
                eval_stats = evaluate(model, envs.obs_rms, args, device, seed=args.seed + 12345)
                metrics.update(eval_stats)
                if eval_stats["eval/mean_return"] > best_eval:
                    best_eval = eval_stats["eval/mean_return"]
                    ckpt.save(_snapshot(model, agent, envs, update, global_step, best_eval), update, is_best=True)
                logger.info("update %d | step %d | eval %.1f (best %.1f)", update, global_step,
                            eval_stats["eval/mean_return"], best_eval)
            else:
                # evaluation env competes with rollout workers for cores; let rank 0 finish first
                time.sleep(30 * args.eval_episodes)  # ruleid: MLS307
            D.barrier(info)

        tracker.log(metrics, step=global_step)
        if info.is_main and update % 10 == 0:
            logger.info("update %d/%d | step %d | return %.1f | kl %.4f | sps %d", update, args.num_updates,
                        global_step, mean_ret, stats["losses/approx_kl"], sps)

        if update % args.save_interval == 0 or _PREEMPTED:
            ckpt.save(_snapshot(model, agent, envs, update, global_step, best_eval), update)
            D.barrier(info)
        if _PREEMPTED:
            logger.warning("exiting after preemption checkpoint at update %d", update)
            break

    final_stats = {
        "global_step": global_step,
        "final_train_return": float(np.mean(recent_returns)) if recent_returns else float("nan"),
        "best_eval_return": max(best_eval, max(all_train_returns, default=best_eval)),  # todoruleid: family 5 (missed)
        "wall_time_s": timer.elapsed(),
    }
    tracker.summary(final_stats)
    if info.is_main:
        envs.save_stats(os.path.join(run_dir, "vecnormalize.pkl"))
        logger.info("done: %s", final_stats)
    tracker.finish()
    envs.close()
    D.cleanup(info)


def _snapshot(model, agent, envs, update, global_step, best_eval):
    return {
        "model": model.state_dict(),
        "agent": agent.state_dict(),
        "vecnorm": envs.state_dict(),
        "update": update,
        "global_step": global_step,
        "best_eval": best_eval,
    }


if __name__ == "__main__":
    main()
