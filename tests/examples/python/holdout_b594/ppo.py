# ruff: noqa
# Hold-out batch 594 (adversarial, PPO on Atari with vectorized environments). Measured once in session 27 (round 158): 13/31 (42%) at medium+.
"""Rollout storage, GAE and the PPO clipped-surrogate update."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from agent import Agent
from config import PPOConfig

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    values: torch.Tensor


class RolloutBuffer:
    """Fixed-size on-policy storage of shape (num_steps, num_envs, ...)."""

    def __init__(self, num_steps: int, num_envs: int, obs_shape: Sequence[int], device: torch.device):
        self.T, self.N = num_steps, num_envs
        self.device = device
        self.obs = torch.zeros((num_steps, num_envs, *obs_shape), dtype=torch.uint8, device=device)
        self.actions = torch.zeros((num_steps, num_envs), dtype=torch.long, device=device)
        self.logprobs = torch.zeros((num_steps, num_envs), device=device)
        self.rewards = torch.zeros((num_steps, num_envs), device=device)
        self.dones = torch.zeros((num_steps, num_envs), device=device)
        self.values = torch.zeros((num_steps, num_envs), device=device)
        self.advantages = torch.zeros_like(self.rewards)
        self.returns = torch.zeros_like(self.rewards)
        self.ptr = 0

    def reset(self) -> None:
        self.ptr = 0

    def add(self, obs, done, action, logprob, value) -> None:
        t = self.ptr
        self.obs[t] = obs
        self.dones[t] = done
        self.actions[t] = action
        self.logprobs[t] = logprob
        self.values[t] = value.flatten()
        self.ptr += 1

    def add_reward(self, reward: torch.Tensor) -> None:
        self.rewards[self.ptr % self.T] = reward  # todoruleid: family 6 (missed)

    @torch.no_grad()
    def compute_returns(self, next_value: torch.Tensor, next_done: torch.Tensor, gamma: float, lam: float) -> None:
        """Generalised advantage estimation (Schulman et al., 2016)."""
        lastgaelam = torch.zeros(self.N, device=self.device)
        for t in reversed(range(self.T)):
            if t == self.T - 1:
                nextnonterminal = 1.0 - next_done
                nextvalues = next_value
            else:
                nextnonterminal = 1.0 - self.dones[t]  # ruleid: MLS309
                nextvalues = self.values[t + 1]
            delta = self.rewards[t] + gamma * nextvalues * nextnonterminal - self.values[t]
            lastgaelam = delta + gamma * lam * nextnonterminal * lastgaelam
            self.advantages[t] = lastgaelam
        self.returns = self.advantages + self.values

    def flatten(self, adv_norm: str) -> Batch:
        adv = self.advantages
        if adv_norm == "per_env":
            adv = adv.T  # (num_envs, num_steps): statistics per environment stream
            adv = (adv - adv.mean(dim=1, keepdim=True)) / (adv.std(dim=1, keepdim=True) + 1e-8)
        flat_adv = adv.reshape(-1)  # todoruleid: family 6 (missed)
        flat = lambda x: x.reshape(-1)  # noqa: E731
        obs = self.obs.reshape((-1, *self.obs.shape[2:]))
        return Batch(obs, flat(self.actions), flat(self.logprobs), flat_adv, flat(self.returns), flat(self.values))


class MinibatchSampler:
    """Iterates over shuffled minibatch index tensors; reproducible given the run seed."""

    def __init__(self, batch_size: int, minibatch_size: int, seed: int, device: torch.device):
        self.batch_size = batch_size
        self.minibatch_size = minibatch_size
        self.device = device
        self._seed = seed

    @property
    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self._seed)  # ruleid: MLS301

    def __iter__(self) -> Iterator[torch.Tensor]:
        perm = torch.randperm(self.batch_size, generator=self.generator).to(self.device)
        for start in range(0, self.batch_size, self.minibatch_size):
            yield perm[start : start + self.minibatch_size]


def shrink_perturb(params: List[torch.Tensor], shrink: float, sigma: float) -> None:
    """Shrink-and-perturb: p <- shrink * p + sigma * eps (restores plasticity)."""
    with torch.no_grad():
        torch._foreach_mul_(params, shrink)  # todoruleid: family 2 (missed)
        torch._foreach_add_(params, [torch.randn_like(p).mul_(sigma) for p in params])


def explained_variance(y_pred: torch.Tensor, y_true: torch.Tensor) -> float:
    var_y = torch.var(y_true)
    if var_y == 0:
        return float("nan")
    return float(1.0 - torch.var(y_true - y_pred) / var_y)


class PPOLearner:
    def __init__(self, agent: Agent, cfg: PPOConfig, device: torch.device,
                 grad_sync: Optional[Callable[[Iterable[nn.Parameter]], None]] = None):
        self.agent = agent
        self.cfg = cfg
        self.device = device
        self.grad_sync = grad_sync
        self.optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)
        self.sampler = MinibatchSampler(cfg.batch_size, cfg.minibatch_size, cfg.seed, device)

    def set_lr(self, update: int, num_updates: int) -> float:
        frac = 1.0 - (update - 1.0) / num_updates
        lr = frac * self.cfg.learning_rate
        for group in self.optimizer.param_groups:
            group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
        return lr

    def _loss(self, b: Batch, mb: torch.Tensor) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        _, newlogprob, entropy, newvalue = self.agent.get_action_and_value(b.obs[mb], b.actions[mb])
        logratio = newlogprob - b.logprobs[mb]
        ratio = logratio.exp()

        mb_adv = b.advantages[mb]
        if cfg.adv_norm == "minibatch":
            mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)

        pg_loss1 = -mb_adv * ratio
        pg_loss2 = -mb_adv * torch.clamp(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)
        pg_loss = torch.max(pg_loss1, pg_loss2).mean()

        newvalue = newvalue.view(-1)
        if cfg.clip_vloss:
            v_unclipped = (newvalue - b.returns[mb]) ** 2
            v_clipped = b.values[mb] + torch.clamp(newvalue - b.values[mb], -cfg.clip_coef, cfg.clip_coef)
            v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - b.returns[mb]) ** 2).mean()
        else:
            v_loss = 0.5 * ((newvalue - b.returns[mb]) ** 2).mean()

        entropy_loss = entropy.mean()
        loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
        with torch.no_grad():
            approx_kl = ((ratio - 1) - logratio).mean()
            clipfrac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()
        return dict(loss=loss, pg_loss=pg_loss, v_loss=v_loss, entropy=entropy_loss,
                    approx_kl=approx_kl, clipfrac=clipfrac)

    def update(self, b: Batch, update_idx: int) -> Dict[str, float]:
        cfg = self.cfg
        params = list(self.agent.parameters())
        history: Dict[str, List[float]] = {}
        approx_kl = torch.zeros(())
        for _epoch in range(cfg.update_epochs):
            for mb in self.sampler:
                out = self._loss(b, mb)
                self.optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                if self.grad_sync is not None:
                    self.grad_sync(params)
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                self.optimizer.step()
                approx_kl = out["approx_kl"]
                for k, v in out.items():
                    history.setdefault(k, []).append(float(v.detach()))
            if cfg.target_kl is not None and approx_kl > cfg.target_kl:
                logger.info("early stop at epoch %d (approx_kl=%.4f)", _epoch, float(approx_kl))
                break

        if cfg.sp_interval > 0 and update_idx % cfg.sp_interval == 0:
            shrink_perturb(params, cfg.sp_shrink, cfg.sp_sigma)

        stats = {k: float(np.mean(v)) for k, v in history.items()}
        stats["explained_variance"] = explained_variance(b.values, b.returns)
        stats["learning_rate"] = self.optimizer.param_groups[0]["lr"]
        return stats

    def state_dict(self) -> Dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
