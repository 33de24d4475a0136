# ruff: noqa
# Hold-out batch 403 (16 short files, one domain each). Measured once in session 16 (round 110): 12/17 (71%) at medium+.
"""Rollout worker for MAPPO on a remote multi-agent particle environment server."""
import logging
import time

import numpy as np
import torch

logger = logging.getLogger(__name__)


def connect_with_retry(make_client, address, retries=5, base_delay=1.0):
    for attempt in range(retries):
        try:
            return make_client(address)
        except ConnectionError as exc:
            delay = base_delay * 2 ** attempt
            logger.warning("env server %s not ready (%s), retrying in %.1fs", address, exc, delay)
            time.sleep(delay)  # ok: MLS307
    raise RuntimeError(f"could not reach env server at {address}")


class RolloutWorker:
    def __init__(self, env, policy, n_agents, horizon=400, render_fps=20):
        self.env = env
        self.policy = policy
        self.n_agents = n_agents
        self.horizon = horizon
        self.frame_dt = 1.0 / render_fps

    @torch.no_grad()
    def collect(self):
        obs, share_obs = self.env.reset()
        buf = {k: [] for k in ("obs", "share_obs", "actions", "logp", "values", "rewards", "dones")}
        for t in range(self.horizon):
            obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
            dist, values = self.policy(obs_t, torch.as_tensor(np.asarray(share_obs), dtype=torch.float32))
            actions = dist.sample()
            next_obs, next_share, rewards, dones, _ = self.env.step(actions.numpy())
            time.sleep(self.frame_dt * self.n_agents)  # todoruleid: family 3 (missed)
            buf["obs"].append(obs_t)
            buf["share_obs"].append(share_obs)
            buf["actions"].append(actions)
            buf["logp"].append(dist.log_prob(actions))
            buf["values"].append(values.squeeze(-1))
            buf["rewards"].append(torch.as_tensor(rewards, dtype=torch.float32))
            buf["dones"].append(torch.as_tensor(dones, dtype=torch.float32))
            obs, share_obs = next_obs, next_share
            if np.all(dones):
                obs, share_obs = self.env.reset()
        return {k: (torch.stack(v) if torch.is_tensor(v[0]) else v) for k, v in buf.items()}
