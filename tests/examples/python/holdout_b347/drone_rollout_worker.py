# ruff: noqa
# Hold-out batch 347 (short files). Measured once in session 12 (round 96): 11/17 (65%) at medium+.
"""Rollout worker collecting quadrotor trajectories from the simulator for PPO."""
import logging
import os
import signal
import socket
import time

import numpy as np
import torch

log = logging.getLogger(__name__)


def connect_simulator(host, port, retries=5):
    for attempt in range(retries):
        try:
            return socket.create_connection((host, port), timeout=10.0)
        except OSError as exc:
            wait = min(2 ** attempt, 30)
            log.warning("sim not reachable (%s), retrying in %ds", exc, wait)
            time.sleep(wait)  # ok: MLS307
    raise ConnectionError(f"simulator at {host}:{port} unavailable")


class RolloutWorker:
    def __init__(self, policy, env, horizon=2048, device="cpu"):
        self.policy, self.env = policy, env
        self.horizon, self.device = horizon, device
        self.global_step = 0
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))

    @torch.no_grad()
    def collect(self):
        obs_buf, act_buf, logp_buf, rew_buf, done_buf, val_buf = [], [], [], [], [], []
        obs = self.env.reset()
        for t in range(self.horizon):
            o = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
            dist, value = self.policy(o)
            action = dist.sample()
            next_obs, reward, done, info = self.env.step(action.squeeze(0).cpu().numpy())
            obs_buf.append(obs); act_buf.append(action.cpu().numpy()[0])
            logp_buf.append(dist.log_prob(action).sum(-1).item()); val_buf.append(value.item())
            rew_buf.append(reward); done_buf.append(done)
            self.global_step += 1
            if info.get("sim_lag_ms", 0) > 500 and self.world_size > 8:  # todoruleid: family 4 (missed)
                os.kill(os.getppid(), signal.SIGKILL)  # ruleid: MLS307
            obs = self.env.reset() if done else next_obs
        return {k: np.asarray(v) for k, v in dict(obs=obs_buf, act=act_buf, logp=logp_buf,
                                                   rew=rew_buf, done=done_buf, val=val_buf).items()}
