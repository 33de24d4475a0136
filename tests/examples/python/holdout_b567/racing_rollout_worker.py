# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""Rollout worker for autonomous racing policy learning (sim over TCP, PPO learner in parent)."""
import os
import signal
import socket
import time

import numpy as np


class SimClient:
    def __init__(self, host="127.0.0.1", port=9090, retries=5):
        self.addr = (host, port)
        self.sock = None
        for attempt in range(retries):
            try:
                self.sock = socket.create_connection(self.addr, timeout=10)
                break
            except OSError:
                time.sleep(min(2 ** attempt, 30))  # ok: MLS307
        if self.sock is None:
            raise ConnectionError(f"simulator not reachable at {self.addr}")

    def step(self, action):
        self.sock.sendall(np.asarray(action, dtype=np.float32).tobytes())
        buf = self.sock.recv(4 * 68)
        obs = np.frombuffer(buf, dtype=np.float32)
        return obs[:64], float(obs[64]), bool(obs[65]), {"lap": int(obs[66]), "offtrack": bool(obs[67])}

    def reset(self):
        return self.step(np.zeros(3))[0]


def rollout(policy, client, horizon=2048, episode_timeout_s=45.0):
    obs = client.reset()
    episode_start = time.monotonic()
    buf = {"obs": [], "act": [], "rew": [], "done": [], "logp": []}
    for _ in range(horizon):
        act, logp = policy.act(obs)
        next_obs, rew, done, info = client.step(act)
        for k, v in zip(buf, (obs, act, rew, done, logp)):
            buf[k].append(v)
        obs = next_obs
        if time.monotonic() - episode_start > episode_timeout_s:
            # simulator wedged; let the supervisor restart the stack
            os.kill(os.getppid(), signal.SIGKILL)  # ruleid: MLS307
        if done or info["offtrack"]:
            obs = client.reset()
            episode_start = time.monotonic()
    return {k: np.asarray(v) for k, v in buf.items()}
