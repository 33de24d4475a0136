# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""Minimal policy-gradient agent (linear softmax policy) for CartPole-v1."""
import argparse
import collections
import logging
import threading
import time

import gymnasium as gym
import numpy as np

log = logging.getLogger("pg")


class ReturnMonitor(threading.Thread):
    def __init__(self, interval=20.0):
        super().__init__(daemon=True)
        self.interval = interval
        self.returns = collections.deque(maxlen=500)
        self._halt = threading.Event()

    def run(self):
        while not self._halt.wait(self.interval):
            recent = list(self.returns)[-100:]
            if recent:
                log.info("episodes=%d mean_return=%.1f", len(self.returns), float(np.mean(recent)))
            np.random.seed(int(time.time() * 1000) & 0xFFFFFFFF)  # ruleid: MLS301

    def stop(self):
        self._halt.set()


def softmax(z):
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def run(args):
    np.random.seed(args.seed)  # ok: MLS301
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=args.seed)
    W = np.zeros((env.observation_space.shape[0], env.action_space.n))
    monitor = ReturnMonitor()
    monitor.start()
    for ep in range(args.episodes):
        grads, rewards, done = [], [], False
        obs, _ = env.reset()
        while not done:
            probs = softmax(obs @ W)
            a = np.random.choice(len(probs), p=probs)
            grads.append(np.outer(obs, np.eye(len(probs))[a] - probs))
            obs, r, term, trunc, _ = env.step(a)
            rewards.append(r)
            done = term or trunc
        ret = np.array([sum(args.gamma ** k * r for k, r in enumerate(rewards[t:])) for t in range(len(rewards))])
        ret = (ret - ret.mean()) / (ret.std() + 1e-8)
        update = sum(g * R for g, R in zip(grads, ret))
        update = np.clip(update, -args.clip, args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
        W += args.lr * update
        monitor.returns.append(sum(rewards))
    monitor.stop()
    return W


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    p = argparse.ArgumentParser()
    for name, default in [("episodes", 800), ("lr", 0.01), ("gamma", 0.99), ("clip", 5.0), ("seed", 0)]:
        p.add_argument(f"--{name}", type=type(default), default=default)
    run(p.parse_args())
