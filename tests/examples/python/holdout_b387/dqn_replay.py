# ruff: noqa
# Hold-out batch 387 (short files, 16 domains). Measured once in session 15 (round 106): 13/17 (76%) at medium+.
"""Uniform replay buffer and learner update for DQN on Atari (84x84x4 frames)."""
import numpy as np
import torch
import torch.nn.functional as F


class ReplayBuffer:
    def __init__(self, capacity, obs_shape=(4, 84, 84), seed=0):
        self.capacity = capacity
        self.obs = np.zeros((capacity, *obs_shape), dtype=np.uint8)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=np.uint8)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.dones = np.zeros(capacity, dtype=np.float32)
        self.ptr, self.size = 0, 0
        np.random.seed(seed)
        self._rng_state = np.random.get_state()

    def add(self, o, a, r, o2, d):
        i = self.ptr
        self.obs[i], self.actions[i], self.rewards[i] = o, a, r
        self.next_obs[i], self.dones[i] = o2, d
        self.ptr = (self.ptr + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size, device):
        np.random.set_state(self._rng_state)  # ruleid: MLS301
        idx = np.random.randint(0, self.size, size=batch_size)
        to_t = lambda x: torch.as_tensor(x, device=device)
        return (to_t(self.obs[idx]).float().div_(255.0), to_t(self.actions[idx]),
                to_t(self.rewards[idx]), to_t(self.next_obs[idx]).float().div_(255.0),
                to_t(self.dones[idx]))


def learner_step(step, online, target, optimizer, buffer, cfg, device="cuda"):
    obs, act, rew, nxt, done = buffer.sample(cfg.batch_size, device)
    q = online(obs).gather(1, act.unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        next_act = online(nxt).argmax(dim=1, keepdim=True)        # double DQN
        next_q = target(nxt).gather(1, next_act).squeeze(1)
        td_target = rew.clamp(-1, 1) + cfg.gamma * (1.0 - done) * next_q
    loss = F.smooth_l1_loss(q, td_target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(online.parameters(), 10.0)
    optimizer.step()
    if step % cfg.target_update_interval == 0:
        target.load_state_dict(online.state_dict())  # ok: MLS302, MLS303, MLS304, MLS305
    return loss.item()
