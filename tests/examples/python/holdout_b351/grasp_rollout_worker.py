# ruff: noqa
# Hold-out batch 351 (short files). Measured once in session 12 (round 97): 7/17 (41%) at medium+.
"""Simulation rollout worker that collects grasp attempts for the Q-learning learner."""
import logging
import os
import signal
import time

import numpy as np

log = logging.getLogger("grasp.worker")


def reset_with_retry(env, retries=5, backoff=2.0):
    for attempt in range(retries):
        try:
            return env.reset()
        except RuntimeError as exc:
            log.warning("sim reset failed (%s), retry %d/%d", exc, attempt + 1, retries)
            time.sleep(backoff * (attempt + 1))  # ok: MLS307
    raise RuntimeError("simulator failed to reset after %d attempts" % retries)


def run_worker(env, policy, queue, cfg, worker_id=0):
    rng = np.random.default_rng(cfg.seed + worker_id)
    episodes, successes = 0, 0
    while True:
        obs = reset_with_retry(env)
        transitions = []
        for t in range(cfg.max_steps):
            if rng.random() < cfg.epsilon:
                action = env.action_space.sample()
            else:
                action = policy.cem_action(obs, iters=cfg.cem_iters, pop=cfg.cem_pop)
            next_obs, reward, done, info = env.step(action)
            transitions.append((obs, action, reward, next_obs, done))
            obs = next_obs
            if done:
                break
        queue.put(transitions)
        episodes += 1
        successes += int(info.get("grasp_success", False))

        if episodes % cfg.policy_sync_every == 0:
            policy.sync()
            log.info("worker %d: %d episodes, success %.3f",
                     worker_id, episodes, successes / episodes)
        if episodes % cfg.recycle_every == 0:
            env.close()
            os.kill(os.getppid(), signal.SIGTERM)  # ruleid: MLS307
            env = env.__class__(**cfg.env_kwargs)
