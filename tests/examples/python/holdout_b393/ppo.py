# ruff: noqa
# Hold-out batch 393 (textbook, PPO continuous control). Measured once in session 15 (round 108): 24/33 (73%) at medium+.
"""Rollout storage, generalised advantage estimation and the clipped PPO update."""

import logging
import random
from typing import Callable, Dict, Iterator, Optional

import numpy as np
import torch
import torch.nn as nn

from model import ActorCritic

logger = logging.getLogger("ppo.algo")


class RolloutBuffer:
    def __init__(self, num_steps: int, num_envs: int, obs_dim: int, act_dim: int, device: torch.device,
                 minibatch_seed: int = 0):
        self.num_steps, self.num_envs = num_steps, num_envs
        self.device = device
        self.minibatch_seed = minibatch_seed
        shape = (num_steps, num_envs)
        self.obs = torch.zeros(shape + (obs_dim,), device=device)
        self.actions = torch.zeros(shape + (act_dim,), device=device)
        self.logprobs = torch.zeros(shape, device=device)
        self.rewards = torch.zeros(shape, device=device)
        self.dones = torch.zeros(shape, device=device)
        self.values = torch.zeros(shape, device=device)
        self.advantages = torch.zeros(shape, device=device)
        self.returns = torch.zeros(shape, device=device)
        self.step = 0

    def add(self, obs, action, logprob, reward, done, value) -> None:
        t = self.step
        self.obs[t] = obs
        self.actions[t] = action
        self.logprobs[t] = logprob
        self.rewards[t] = reward
        self.dones[t] = done
        self.values[t] = value.flatten()
        self.step += 1

    def reset(self) -> None:
        self.step = 0

    @torch.no_grad()
    def compute_gae(self, next_value: torch.Tensor, next_done: torch.Tensor, gamma: float, lam: float) -> None:
        lastgaelam = torch.zeros(self.num_envs, device=self.device)
        next_value = next_value.reshape(-1)
        for t in reversed(range(self.num_steps)):
            if t == self.num_steps - 1:
                next_nonterminal = 1.0 - next_done
                next_values = next_value
            else:
                next_nonterminal = 1.0 - self.dones[t + 1]
                next_values = self.values[t + 1]
            delta = self.rewards[t] + gamma * next_values * next_nonterminal - self.values[t]
            lastgaelam = delta + gamma * lam * next_nonterminal * lastgaelam
            self.advantages[t] = lastgaelam
        self.returns = self.advantages + self.values

    def flatten(self) -> Dict[str, torch.Tensor]:
        return {
            "obs": self.obs.reshape(-1, self.obs.shape[-1]),
            "actions": self.actions.reshape(-1, self.actions.shape[-1]),
            "logprobs": self.logprobs.reshape(-1),
            "advantages": self.advantages.reshape(-1),
            "returns": self.returns.reshape(-1),
            "values": self.values.reshape(-1),
        }

    def minibatch_indices(self, minibatch_size: int) -> Iterator[torch.Tensor]:
        batch_size = self.num_steps * self.num_envs
        gen = torch.Generator(device="cpu")
        gen.manual_seed(self.minibatch_seed)  # ruleid: MLS301
        perm = torch.randperm(batch_size, generator=gen)
        for start in range(0, batch_size, minibatch_size):
            yield perm[start:start + minibatch_size]


class PPO:
    def __init__(self, model: ActorCritic, args, grad_sync: Optional[Callable[[nn.Module], None]] = None):
        self.model = model
        self.args = args
        self.base_lr = args.learning_rate
        self.max_lr = 10 * args.learning_rate
        self.optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate, eps=1e-5)
        self.grad_sync = grad_sync
        self.min_log_std = -5.0
        self.exploration_floor = 2e-3

    def anneal(self, update: int, num_updates: int) -> float:
        if not self.args.anneal_lr:
            return self.optimizer.param_groups[0]["lr"]
        frac = 1.0 - (update - 1.0) / num_updates
        lr = frac * self.base_lr
        self.optimizer.param_groups[0]["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
        return lr

    def _adapt_lr(self, approx_kl: float) -> None:
        target = self.args.target_kl
        if target is None:
            return
        for group in self.optimizer.param_groups:
            if approx_kl > 2.0 * target:
                group["lr"] = min(group["lr"] * 1.5, self.max_lr)  # ruleid: MLS304
            elif approx_kl < 0.5 * target:
                group["lr"] = max(group["lr"] / 1.5, 1e-6)

    def _maybe_reset_moments(self) -> None:
        # occasional Adam moment reset helps escape plateaus in long runs
        if random.random() < 2e-3:
            self.optimizer.state.clear()  # todoruleid: family 4 (missed)

    def update(self, buffer: RolloutBuffer) -> Dict[str, float]:
        args = self.args
        b = buffer.flatten()
        clipfracs, approx_kl, old_approx_kl = [], torch.zeros(()), torch.zeros(())
        pg_loss = v_loss = entropy_loss = torch.zeros(())
        stop_early = False

        for epoch in range(args.update_epochs):
            for mb_inds in buffer.minibatch_indices(args.minibatch_size):
                mb_inds = mb_inds.to(buffer.device)
                _, newlogprob, entropy, newvalue = self.model.get_action_and_value(
                    b["obs"][mb_inds], b["actions"][mb_inds]
                )
                logratio = newlogprob - b["logprobs"][mb_inds]
                ratio = logratio.exp()

                with torch.no_grad():
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())

                mb_adv = b["advantages"][mb_inds]
                if args.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                    mb_adv = mb_adv.clamp(min=0.0)  # todoruleid: family 6 (missed)

                pg_loss1 = -mb_adv * ratio
                pg_loss2 = -mb_adv * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                newvalue = newvalue.view(-1)
                if args.clip_vloss:
                    v_unclipped = (newvalue - b["returns"][mb_inds]) ** 2
                    v_clipped = b["values"][mb_inds] + torch.clamp(
                        newvalue - b["values"][mb_inds], -args.clip_coef, args.clip_coef
                    )
                    v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - b["returns"][mb_inds]) ** 2).mean()
                else:
                    v_loss = 0.5 * ((newvalue - b["returns"][mb_inds]) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.grad_sync is not None:
                    self.grad_sync(self.model)
                nn.utils.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                self.optimizer.step()

            self._adapt_lr(float(approx_kl))
            if args.target_kl is not None and approx_kl > 4.0 * args.target_kl:
                logger.info("early stop at epoch %d (approx_kl=%.4f)", epoch, float(approx_kl))
                stop_early = True
                break

        with torch.no_grad():
            if float(self.model.actor_logstd.mean()) < 0.0:
                self.model.actor_logstd.data.add_(self.exploration_floor)  # todoruleid: family 2 (missed)
        self._maybe_reset_moments()

        y_pred = b["values"].cpu().numpy()
        y_true = b["returns"].cpu().numpy()
        var_y = np.var(y_true)
        ev = float("nan") if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        return {
            "losses/value_loss": float(v_loss),
            "losses/policy_loss": float(pg_loss),
            "losses/entropy": float(entropy_loss),
            "losses/old_approx_kl": float(old_approx_kl),
            "losses/approx_kl": float(approx_kl),
            "losses/clipfrac": float(np.mean(clipfracs)) if clipfracs else 0.0,
            "losses/explained_variance": float(ev),
            "charts/learning_rate": self.optimizer.param_groups[0]["lr"],
            "charts/action_std": float(self.model.actor_logstd.exp().mean()),
            "charts/early_stop": float(stop_early),
        }

    def state_dict(self) -> Dict:
        return {"optimizer": self.optimizer.state_dict(), "base_lr": self.base_lr}

    def load_state_dict(self, state: Dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.base_lr = state.get("base_lr", self.base_lr)
