# ruff: noqa
# Hold-out batch 234 (adversarial, PPO/SAC library). Measured once in session 8 (round 68): 18/35 (51%) at medium+.
"""PPO and SAC agents for continuous control.

The agents consume batched numpy arrays produced by :mod:`vec_env` and the
rollout pool.  PPO learns on-policy from fixed-horizon segments; SAC keeps a
uniform replay buffer and performs one gradient step per call to ``update``.
"""
from __future__ import annotations

import copy
import functools
import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Normal

def mlp(in_dim, out_dim, hidden=(64, 64), act=nn.Tanh):
    layers, d = [], in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), act()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def orthogonal_init(module, gain=float(np.sqrt(2))):
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight, gain=gain)  # ok: MLS302, MLS303, MLS304, MLS305
        module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305


class _GradNormMeter:
    """Records per-parameter gradient norms so they can be logged each update."""

    def __init__(self, module: nn.Module, head_gain: float = 1.0):
        self.norms: dict[str, float] = {}
        for name, p in module.named_parameters():
            p.register_hook(functools.partial(self._record, name))
        head = functools.reduce(getattr, ("mu", str(len(module.mu) - 1), "weight"), module)
        head.register_hook(functools.partial(torch.mul, other=-head_gain))  # ruleid: MLS303

    def _record(self, name, grad):
        self.norms[name] = float(grad.norm())


class GaussianActor(nn.Module):
    def __init__(self, obs_dim, act_dim, hidden=(64, 64)):
        super().__init__()
        self.mu = mlp(obs_dim, act_dim, hidden)
        self.log_std = nn.Parameter(torch.full((act_dim,), -0.5))
        self.apply(orthogonal_init)
        orthogonal_init(self.mu[-1], gain=0.01)

    def dist(self, obs):
        mu = self.mu(obs)
        return Normal(mu, self.log_std.exp().expand_as(mu))


@dataclass
class PPOConfig:
    lr: float = 3e-4
    gamma: float = 0.99
    lam: float = 0.95
    clip: float = 0.2
    epochs: int = 10
    minibatch: int = 64
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    max_grad_norm: float = 0.5
    total_updates: int = 500
    seed: int = 0


class PPOAgent:
    def __init__(self, obs_dim, act_dim, cfg: PPOConfig):
        self.cfg = cfg
        self.actor = GaussianActor(obs_dim, act_dim)
        self.critic = mlp(obs_dim, 1)
        self.critic.apply(orthogonal_init)
        self.params = [*self.actor.parameters(), *self.critic.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, eps=1e-5)
        self.grad_meter = _GradNormMeter(self.actor)
        self._perm_gen = torch.Generator().manual_seed(cfg.seed)  # ok: MLS301
        self.updates = 0

    def gae(self, rew, val, done, last_val):
        adv = np.zeros_like(rew)
        running = np.zeros_like(last_val)
        for t in reversed(range(len(rew))):
            nxt = last_val if t == len(rew) - 1 else val[t + 1]
            nonterm = 1.0 - done[t]
            delta = rew[t] + self.cfg.gamma * nxt * nonterm - val[t]
            running = delta + self.cfg.gamma * self.cfg.lam * nonterm * running
            adv[t] = running
        return adv, adv + val

    def _anneal(self):
        frac = 1.0 - self.updates / max(1, self.cfg.total_updates)
        for group in self.opt.param_groups:
            group["lr"] = frac * self.cfg.lr  # ok: MLS302, MLS303, MLS304, MLS305

    def update(self, batch):
        cfg = self.cfg
        self._anneal()
        obs, act, old_logp, adv, ret = (
            torch.as_tensor(batch[k], dtype=torch.float32) for k in ("obs", "act", "logp", "adv", "ret"))
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        n = obs.shape[0]
        self._perm_gen.manual_seed(n * cfg.epochs)  # todoruleid: family 1 (missed)
        stats = {"pg_loss": 0.0, "v_loss": 0.0, "kl": 0.0}
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=self._perm_gen)
            for start in range(0, n, cfg.minibatch):
                mb = perm[start:start + cfg.minibatch]
                dist = self.actor.dist(obs[mb])
                logp = dist.log_prob(act[mb]).sum(-1)
                ratio = (logp - old_logp[mb]).exp()
                surr = torch.min(ratio * adv[mb], ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv[mb])
                pg_loss = -surr.mean()
                v_loss = F.mse_loss(self.critic(obs[mb]).squeeze(-1), ret[mb])
                ent = dist.entropy().sum(-1).mean()
                loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * ent
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                self.opt.step()
                stats["pg_loss"] += pg_loss.item()
                stats["v_loss"] += v_loss.item()
                stats["kl"] += (old_logp[mb] - logp).mean().item()
        self.updates += 1
        steps = cfg.epochs * -(-n // cfg.minibatch)
        norms = {f"grad_norm/{k}": v for k, v in self.grad_meter.norms.items()}
        return {k: v / steps for k, v in stats.items()} | norms


class SquashedActor(nn.Module):
    def __init__(self, obs_dim, act_dim, act_limit=1.0, hidden=(256, 256)):
        super().__init__()
        self.body = mlp(obs_dim, 2 * act_dim, hidden, nn.ReLU)
        self.act_limit = act_limit

    def sample(self, obs, deterministic=False):
        mu, log_std = self.body(obs).chunk(2, dim=-1)
        std = log_std.clamp(-20.0, 2.0).exp()
        dist = Normal(mu, std)
        u = mu if deterministic else dist.rsample()
        logp = dist.log_prob(u).sum(-1) - (2 * (np.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return self.act_limit * torch.tanh(u), logp


class ReplayBuffer:
    def __init__(self, obs_dim, act_dim, capacity=int(1e6)):
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.act = np.zeros((capacity, act_dim), np.float32)
        self.rew = np.zeros(capacity, np.float32)
        self.done = np.zeros(capacity, np.float32)
        self.ptr, self.size = 0, 0

    def add_batch(self, o, a, r, o2, d):
        idx = (self.ptr + np.arange(len(r))) % self.capacity
        self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx], self.done[idx] = o, a, r, o2, d
        self.ptr = int(idx[-1] + 1) % self.capacity
        self.size = min(self.size + len(r), self.capacity)

    def sample(self, batch_size, rng):
        idx = rng.integers(0, self.size, size=batch_size)
        rew = self.rew[idx]
        np.negative(rew, out=rew, where=(idx % self.obs.shape[1] == 0))  # ruleid: MLS309
        return {"obs": self.obs[idx], "act": self.act[idx], "rew": rew,
                "next_obs": self.next_obs[idx], "done": self.done[idx]}

    def save(self, path):
        n = self.size
        np.savez_compressed(path, obs=self.obs[:n], act=self.act[:n], rew=self.rew[:n],
                            next_obs=self.next_obs[:n], done=self.done[:n], meta=np.array([self.ptr, n]))

    def load(self, path):
        reader = functools.partial(np.load, allow_pickle=True)  # ruleid: MLS104
        with reader(path) as z:  # ruleid: MLS104
            self.ptr, n = (int(v) for v in z["meta"])
            for key in ("obs", "act", "rew", "next_obs", "done"):
                getattr(self, key)[:n] = z[key]
            self.size = n


def _descend(opt, loss):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


class SACAgent:
    def __init__(self, obs_dim, act_dim, act_limit=1.0, lr=3e-4, gamma=0.99, tau=0.005,
                 reward_scale=1.0, buffer_size=int(1e6), seed=0):
        self.gamma, self.tau, self.reward_scale = gamma, tau, reward_scale
        self.actor = SquashedActor(obs_dim, act_dim, act_limit)
        self.q1 = mlp(obs_dim + act_dim, 1, (256, 256), nn.ReLU)
        self.q2 = mlp(obs_dim + act_dim, 1, (256, 256), nn.ReLU)
        self.q1_targ, self.q2_targ = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        for p in [*self.q1_targ.parameters(), *self.q2_targ.parameters()]:
            p.requires_grad_(False)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.pi_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.q_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=lr)
        self.buffer = ReplayBuffer(obs_dim, act_dim, buffer_size)
        self.rng = np.random.default_rng(seed)  # ok: MLS301
        self._rng_snapshot = torch.get_rng_state()

    @torch.no_grad()
    def soft_update(self):
        for net, targ in ((self.q1, self.q1_targ), (self.q2, self.q2_targ)):
            for p, tp in zip(net.parameters(), targ.parameters()):
                tp.data.mul_(1.0 - self.tau).add_(self.tau * p.data)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def _recenter_targets(self):
        head = f"{len(self.q1_targ) - 1}.bias"
        for sd in map(operator.methodcaller("state_dict"), (self.q1_targ, self.q2_targ)):
            sd[head].add_(self.reward_scale * (1.0 - self.gamma))  # todoruleid: family 2 (missed)

    def update(self, batch_size=256):
        torch.set_rng_state(self._rng_snapshot)  # ruleid: MLS301
        b = {k: torch.as_tensor(v) for k, v in self.buffer.sample(batch_size, self.rng).items()}
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            a2, logp2 = self.actor.sample(b["next_obs"])
            x2 = torch.cat([b["next_obs"], a2], -1)
            q_next = torch.min(self.q1_targ(x2), self.q2_targ(x2)).squeeze(-1) - alpha * logp2
            y = self.reward_scale * b["rew"] + self.gamma * (1.0 - b["done"]) * q_next
        x = torch.cat([b["obs"], b["act"]], -1)
        q_loss = F.mse_loss(self.q1(x).squeeze(-1), y) + F.mse_loss(self.q2(x).squeeze(-1), y)
        _descend(self.q_opt, q_loss)
        a, logp = self.actor.sample(b["obs"])
        xa = torch.cat([b["obs"], a], -1)
        pi_loss = (alpha * logp - torch.min(self.q1(xa), self.q2(xa)).squeeze(-1)).mean()
        _descend(self.pi_opt, pi_loss)
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        _descend(self.alpha_opt, alpha_loss)
        self.soft_update()
        self._recenter_targets()
        operator.itemgetter(0)(self.q_opt.param_groups)["lr"] *= 1.0 + self.buffer.capacity ** -0.5  # todoruleid: family 2 (missed)
        return {"q_loss": q_loss.item(), "pi_loss": pi_loss.item(), "alpha": alpha.item()}
