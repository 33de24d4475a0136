# ruff: noqa
# Hold-out batch 475 (16 short files, mixed domains). Measured once in session 20 (round 128): 12/17 (71%) at medium+.
"""Async rollout workers + soft target update for the quadrotor waypoint-navigation SAC agent."""
import os
import multiprocessing as mp

import numpy as np
import torch


def rollout_worker(worker_id, env_fn, policy_state_q, transition_q, max_steps, recycle_every):
    env = env_fn(seed=1000 + worker_id)
    policy = None
    obs, _ = env.reset()
    for step in range(1, max_steps + 1):
        if not policy_state_q.empty():
            policy = policy_state_q.get_nowait()
        if policy is None:
            action = env.action_space.sample()
        else:
            with torch.no_grad():
                action = policy(torch.as_tensor(obs, dtype=torch.float32)[None]).squeeze(0).numpy()
        nxt, reward, terminated, truncated, info = env.step(action)
        transition_q.put((obs, action, reward, nxt, terminated))
        obs = nxt
        if terminated or truncated:
            obs, _ = env.reset()
        if step % recycle_every == 0:
            env.close()
            os._exit(0)  # todoruleid: family 3 (missed)
    env.close()


def start_workers(n, env_fn, max_steps=2_000_000, recycle_every=50_000):
    ctx = mp.get_context("spawn")
    policy_qs = [ctx.Queue(maxsize=1) for _ in range(n)]
    transition_q = ctx.Queue(maxsize=10_000)
    procs = []
    for i in range(n):
        p = ctx.Process(target=rollout_worker, daemon=True,
                        args=(i, env_fn, policy_qs[i], transition_q, max_steps, recycle_every))
        p.start()
        procs.append(p)
    return procs, policy_qs, transition_q


@torch.no_grad()
def soft_update(target, source, tau=0.005):
    for tp, sp in zip(target.parameters(), source.parameters()):
        tp.data.mul_(1.0 - tau).add_(sp.data, alpha=tau)  # ok: MLS302, MLS303, MLS304, MLS305


def drain(transition_q, buffer, max_items=4096):
    n = 0
    while n < max_items and not transition_q.empty():
        buffer.add(*transition_q.get())
        n += 1
    return n
