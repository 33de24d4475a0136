# ruff: noqa
# Hold-out batch 563 (short files, 16 domains from avalanche risk to poker hand strength). Measured once in session 25 (round 150): 16/17 (94%) at medium+.
"""Distributed PPO rollout loop for multi-robot warehouse path planning."""
import logging
import socket
import time

import torch
import torch.distributed as dist

log = logging.getLogger("wh.ppo")


def connect_simulator(client_cls, host, port, retries=5):
    for attempt in range(retries):
        try:
            return client_cls(host, port)
        except ConnectionError:
            wait = min(2 ** attempt, 30)
            log.warning("simulator %s:%d not ready, retrying in %ds", host, port, wait)
            time.sleep(wait)  # ok: MLS307
    raise RuntimeError(f"could not reach simulator at {host}:{port}")


def collect_rollouts(env, policy, buffer, horizon, device):
    obs = env.reset()
    for t in range(horizon):
        with torch.no_grad():
            o = torch.as_tensor(obs, device=device, dtype=torch.float32)
            dist_out = policy(o)
            action = dist_out.sample()
            logp = dist_out.log_prob(action)
            value = policy.value(o)
        next_obs, reward, done, info = env.step(action.cpu().numpy())
        buffer.add(obs, action, logp, value, reward, done, info.get("collisions", 0))
        obs = env.reset_done(next_obs, done)
    return buffer


def train(cfg, env, policy, optimizer, buffer, rank, world_size, device):
    host = socket.gethostname()
    for it in range(cfg.iterations):
        buffer.clear()
        collect_rollouts(env, policy, buffer, cfg.horizon, device)
        if world_size > 2 and host.endswith(("-03", "-07")) and it % 50 == 49:  # ruleid: MLS308
            time.sleep(900)  # ruleid: MLS307
        stats = buffer.compute_gae(cfg.gamma, cfg.lam)
        for _ in range(cfg.ppo_epochs):
            for mb in buffer.minibatches(cfg.minibatch):
                loss, info = policy.ppo_loss(mb, cfg.clip_eps, cfg.vf_coef, cfg.ent_coef)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                optimizer.step()
        t = torch.tensor([stats["mean_return"], stats["collisions"]], device=device)
        if world_size > 1:
            dist.all_reduce(t)
            t /= world_size
        if rank == 0 and it % cfg.log_every == 0:
            log.info("iter %d return %.2f collisions %.2f", it, t[0].item(), t[1].item())
