# ruff: noqa
# Hold-out batch 358 (adversarial, PPO for robotic grasping). Measured once in session 13 (round 99): 8/32 (25%) at medium+.
"""Rollout storage, GAE and the clipped-surrogate PPO update."""
from __future__ import annotations

import logging
import operator
from typing import Dict, Iterator, List

import torch
import torch.nn as nn

from common import allreduce_grads, allreduce_mean

log = logging.getLogger("grasp_ppo.ppo")


class RolloutBuffer:
    """Time-major storage of one rollout per rank: tensors are ``[T, N, ...]``."""

    def __init__(self, T: int, N: int, obs_dim: int, act_dim: int, device: torch.device):
        self.T, self.N = T, N
        self.device = device
        z = lambda *shape: torch.zeros(*shape, device=device)  # noqa: E731
        self.obs = z(T, N, obs_dim)
        self.actions = z(T, N, act_dim)
        self.logprobs = z(T, N)
        self.rewards = z(T, N)
        self.terminals = z(T, N)
        self.values = z(T, N)
        self.advantages = z(T, N)
        self.t = 0

    def add(self, obs, action, logp, reward, terminal, value) -> None:
        slots = (self.obs, self.actions, self.logprobs, self.rewards, self.terminals, self.values)
        for dst, src in zip(slots, (obs, action, logp, reward, terminal, value)):
            dst[self.t].copy_(src)
        self.t += 1

    @torch.no_grad()
    def compute_gae(self, last_value: torch.Tensor, gamma: float, lam: float) -> None:
        """Generalized advantage estimation; truncated episodes bootstrap from the
        value of the (auto-reset) next observation, terminated ones do not."""
        gae = torch.zeros(self.N, device=self.device)
        for t in reversed(range(self.T)):
            next_value = last_value if t == self.T - 1 else self.values[t + 1]
            nonterminal = 1.0 - self.terminals[t]
            delta = self.rewards[t] + gamma * next_value * nonterminal - self.values[t]
            gae = delta + gamma * lam * nonterminal * gae
            self.advantages[t] = gae

    @torch.no_grad()
    def normalize_advantages(self) -> None:
        """Normalize with statistics pooled over all ranks."""
        a = self.advantages
        moments = allreduce_mean(torch.stack([a.mean(), a.pow(2).mean()]))
        mean, sq = moments[0], moments[1]
        std = (sq - mean.pow(2)).clamp_min(1e-12).sqrt()
        a.sub_(mean).div_(std + 1e-8)

    def flatten(self) -> Dict[str, torch.Tensor]:
        flat = lambda x: x.reshape(self.T * self.N, *x.shape[2:])  # noqa: E731
        return {
            "obs": flat(self.obs),
            "actions": flat(self.actions),
            "logprobs": flat(self.logprobs),
            "values": flat(self.values),
            "advantages": flat(self.advantages),
            "returns": flat(self.advantages + self.values),  # todoruleid: family 6 (missed)
        }

    def reset(self) -> None:
        self.t = 0


class PPO:
    def __init__(self, model: nn.Module, cfg, total_updates: int, seed: int):
        self.model = model
        self.cfg = cfg
        self.total_updates = max(total_updates, 1)
        self.params: List[nn.Parameter] = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, eps=cfg.adam_eps)
        self.base_lr = cfg.lr
        self.updates = 0
        self._perm_gen = torch.Generator()
        self._perm_gen.manual_seed(seed)  # ok: MLS301

    def _anneal(self) -> float:
        frac = 1.0 - self.updates / self.total_updates
        lr_now = frac * self.base_lr
        for g in self.opt.param_groups:
            g["lr"] = lr_now
        return lr_now

    def _relax_optimizer(self) -> None:
        """After a KL early stop, damp Adam's second-moment history so the next
        rollout is not dominated by stale curvature estimates."""
        states = (s["exp_avg_sq"] for s in self.opt.state.values() if "exp_avg_sq" in s)
        list(map(operator.methodcaller("zero_"), states))  # ruleid: MLS304

    def _minibatches(self, n: int, mb: int) -> Iterator[torch.Tensor]:
        perm = torch.randperm(n, generator=self._perm_gen)
        for start in range(0, n, mb):
            yield perm[start:start + mb]

    def update(self, buf: RolloutBuffer, minibatch_size: int) -> Dict[str, float]:
        cfg = self.cfg
        if cfg.anneal_lr:
            self._anneal()
        if cfg.norm_adv:
            buf.normalize_advantages()
        batch = buf.flatten()
        n = batch["obs"].shape[0]
        stats: Dict[str, List[float]] = {k: [] for k in ("pg_loss", "v_loss", "entropy", "approx_kl", "clipfrac")}
        early_stop = False
        for epoch in range(cfg.num_epochs):
            for idx in self._minibatches(n, minibatch_size):
                idx = idx.to(batch["obs"].device)
                logp, entropy, value = self.model.evaluate(batch["obs"][idx], batch["actions"][idx])
                log_ratio = logp - batch["logprobs"][idx]
                ratio = log_ratio.exp()
                adv = batch["advantages"][idx]

                pg1 = -adv * ratio
                pg2 = -adv * torch.clamp(ratio, 1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps)
                pg_loss = torch.max(pg1, pg2).mean()

                ret = batch["returns"][idx]
                old_v = batch["values"][idx]
                v_clipped = old_v + torch.clamp(value - old_v, -cfg.value_clip_eps, cfg.value_clip_eps)
                v_loss = 0.5 * torch.max((value - ret).pow(2), (v_clipped - ret).pow(2)).mean()

                ent = entropy.mean()
                loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * ent

                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                allreduce_grads(self.params)
                nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                self.opt.step()

                with torch.no_grad():
                    approx_kl = ((ratio - 1.0) - log_ratio).mean()
                    clipfrac = ((ratio - 1.0).abs() > cfg.clip_eps).float().mean()
                    approx_kl = allreduce_mean(approx_kl.detach().clone())
                for k, v in zip(stats, (pg_loss, v_loss, ent, approx_kl, clipfrac)):
                    stats[k].append(v.item())
            if cfg.target_kl is not None and stats["approx_kl"][-1] > cfg.target_kl:
                log.debug("early stop at epoch %d (kl=%.4f)", epoch, stats["approx_kl"][-1])
                early_stop = True
                break
        if early_stop:
            self._relax_optimizer()
        self.updates += 1
        out = {f"train/{k}": sum(v) / max(len(v), 1) for k, v in stats.items()}
        out["train/lr"] = self.opt.param_groups[0]["lr"]
        out["train/epochs"] = float(epoch + 1)
        return out

    def state_dict(self) -> Dict[str, object]:
        return {"opt": self.opt.state_dict(), "updates": self.updates, "perm_gen": self._perm_gen.get_state()}

    def load_state_dict(self, sd: Dict[str, object]) -> None:
        self.opt.load_state_dict(sd["opt"])
        self.updates = int(sd["updates"])
        self._perm_gen.set_state(sd["perm_gen"])
