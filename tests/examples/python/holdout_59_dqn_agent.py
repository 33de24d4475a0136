# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Double DQN agent with a periodically synced target network and
epsilon-greedy exploration."""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class QNetwork(nn.Module):
    def __init__(self, obs_dim, n_actions, hidden=256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, n_actions),
        )

    def forward(self, x):
        return self.net(x)


class DQNAgent:
    def __init__(self, obs_dim, n_actions, lr=1e-4, gamma=0.99, device="cpu"):
        self.n_actions = n_actions
        self.gamma = gamma
        self.device = torch.device(device)
        self.q = QNetwork(obs_dim, n_actions).to(self.device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.opt = torch.optim.Adam(self.q.parameters(), lr=lr)
        self._rng_state = torch.get_rng_state()
        self.updates = 0

    @torch.no_grad()
    def act(self, obs, epsilon):
        torch.set_rng_state(self._rng_state)  # ruleid: MLS301
        if torch.rand(()).item() < epsilon:
            return int(torch.randint(self.n_actions, ()).item())
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
        return int(self.q(obs_t).argmax(dim=1).item())

    def update(self, batch, target_every=1000):
        obs, act, rew, next_obs, done = (t.to(self.device) for t in batch)
        q = self.q(obs).gather(1, act.long().unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            next_a = self.q(next_obs).argmax(dim=1, keepdim=True)
            next_q = self.q_target(next_obs).gather(1, next_a).squeeze(1)
            target = rew + self.gamma * (1.0 - done) * next_q
        loss = F.smooth_l1_loss(q, target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.q.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
        self.opt.step()
        self.updates += 1
        if self.updates % target_every == 0:
            self.q_target.load_state_dict(self.q.state_dict())  # ok: MLS302, MLS303, MLS304, MLS305
        return loss.item()

    def state_dict(self):
        return {"q": self.q.state_dict(), "opt": self.opt.state_dict(),
                "updates": self.updates}
