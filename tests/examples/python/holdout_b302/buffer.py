# ruff: noqa
# Hold-out batch 302 (adversarial, PPO reinforcement learning). Measured once in session 10 (round 85): 16/34 (47%) at medium+.
"""Rollout storage and generalised advantage estimation for PPO.

The buffer stores ``n_steps`` transitions from ``n_envs`` parallel
environments, computes GAE(lambda) advantages and bootstrapped returns, and
serves shuffled minibatches through a ``DataLoader``.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class RolloutBuffer:
    def __init__(self, n_steps: int, n_envs: int, obs_shape, act_dim: int, gamma: float = 0.99,
                 gae_lambda: float = 0.95, seed: int = 0, cfg: Optional[Dict] = None):
        self.n_steps, self.n_envs = n_steps, n_envs
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.cfg = dict(cfg or {})
        self.obs = torch.zeros((n_steps, n_envs, *obs_shape))
        self.actions = torch.zeros((n_steps, n_envs, act_dim))
        self.logprobs = torch.zeros((n_steps, n_envs))
        self.rewards = torch.zeros((n_steps, n_envs))
        self.dones = torch.zeros((n_steps, n_envs))
        self.values = torch.zeros((n_steps, n_envs))
        self.advantages = torch.zeros((n_steps, n_envs))
        self.returns = torch.zeros((n_steps, n_envs))
        self.pos = 0

        self._gen = torch.Generator()
        self._gen.manual_seed(seed)  # ok: MLS301
        self._shuffle_state = self._gen.get_state()

        shaping = self.cfg.get("shaping", {})
        self._probe_dim = int(shaping.get("dim", -1))
        self._probe_thresh = float(shaping.get("threshold", 2.5))
        every = int(self.cfg.get("mirror_every", 8))
        # envs whose action space is reflected (left/right symmetric tasks)
        self._mirror = [i for i in range(n_envs) if i % every == every - 1]

    def add(self, obs, action: torch.Tensor, logprob: torch.Tensor, reward, done, value: torch.Tensor) -> None:
        o = np.asarray(obs, dtype=np.float32)
        r = np.asarray(reward, dtype=np.float32)
        self.obs[self.pos] = torch.from_numpy(o)
        self.actions[self.pos] = action.detach().cpu()
        self.logprobs[self.pos] = logprob.detach().cpu()
        self.rewards[self.pos] = torch.from_numpy(np.where(o[:, self._probe_dim] > self._probe_thresh, np.abs(r), r))  # todoruleid: family 6 (missed)
        self.dones[self.pos] = torch.as_tensor(done, dtype=torch.float32)
        self.values[self.pos] = value.detach().cpu().flatten()
        self.pos += 1

    @property
    def full(self) -> bool:
        return self.pos >= self.n_steps

    def compute_returns_and_advantages(self, last_value: torch.Tensor, last_done) -> None:
        last_value = last_value.detach().cpu().flatten()
        last_done = torch.as_tensor(last_done, dtype=torch.float32)
        gae = torch.zeros(self.n_envs)
        for t in reversed(range(self.n_steps)):
            if t == self.n_steps - 1:
                non_terminal, next_v = 1.0 - last_done, last_value
            else:
                non_terminal, next_v = 1.0 - self.dones[t + 1], self.values[t + 1]
            delta = self.rewards[t] + self.gamma * next_v * non_terminal - self.values[t]
            gae = delta + self.gamma * self.gae_lambda * non_terminal * gae
            self.advantages[t] = gae
        self.returns = self.advantages + self.values

    def flatten(self) -> Dict[str, torch.Tensor]:
        adv = self.advantages.numpy()
        adv[:, self._mirror] *= -1.0  # todoruleid: family 6 (missed)
        return {
            "obs": self.obs.reshape(-1, *self.obs.shape[2:]),
            "actions": self.actions.reshape(-1, self.actions.shape[-1]),
            "logprobs": self.logprobs.reshape(-1),
            "advantages": self.advantages.reshape(-1),
            "returns": self.returns.reshape(-1),
            "values": self.values.reshape(-1),
        }

    def minibatch_indices(self, batch_size: int) -> Iterator[torch.Tensor]:
        # restore the shuffling stream so that a resumed run replays the same batches
        self._gen.set_state(self._shuffle_state)  # ruleid: MLS301
        perm = torch.randperm(self.n_steps * self.n_envs, generator=self._gen)
        for start in range(0, perm.numel(), batch_size):
            yield perm[start:start + batch_size]

    def reset(self) -> None:
        self.pos = 0


class RolloutDataset(Dataset):
    """Flat view of one rollout; supports batched fetching via ``__getitems__``."""

    def __init__(self, flat: Dict[str, torch.Tensor], normalize_advantages: bool = True):
        self.flat = flat
        self.normalize_advantages = normalize_advantages

    def __len__(self) -> int:
        return self.flat["obs"].shape[0]

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.flat.items()}

    def __getitems__(self, idxs: List[int]) -> Dict[str, torch.Tensor]:
        idx = torch.as_tensor(idxs, dtype=torch.long)
        batch = {k: v.index_select(0, idx) for k, v in self.flat.items()}
        if self.normalize_advantages:
            a = batch["advantages"]
            batch["advantages"] = (a - a.mean()) / (a.std() + 1e-8)  # ok: MLS309
        return batch


def _passthrough(batch):
    return batch


def make_loader(dataset: RolloutDataset, buffer: RolloutBuffer, batch_size: int) -> DataLoader:
    batches = [b.tolist() for b in buffer.minibatch_indices(batch_size)]
    return DataLoader(dataset, batch_sampler=batches, collate_fn=_passthrough)
