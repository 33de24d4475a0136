# ruff: noqa
# Hold-out batch 339 (16 short files). Measured once in session 11 (round 94): 14/17 (82%) at medium+.
"""PPO actor-critic and update step for a quadruped locomotion policy in a vectorised simulator."""
import math

import torch
from torch import nn
from torch.distributions import Normal


def _mlp(inp, out, hidden):
    layers, d = [], inp
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ELU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, out))


def _bound_actions(module, inputs, output):
    return torch.tanh(output) * 0.3  # ruleid: MLS303


class ActorCritic(nn.Module):
    def __init__(self, obs_dim=48, act_dim=12, hidden=(512, 256, 128)):
        super().__init__()
        self.actor = _mlp(obs_dim, act_dim, hidden)
        self.critic = _mlp(obs_dim, 1, hidden)
        self.log_std = nn.Parameter(torch.full((act_dim,), -0.5))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight, gain=math.sqrt(2))  # ok: MLS302, MLS303, MLS304, MLS305
                nn.init.zeros_(m.bias)

    def dist(self, obs):
        return Normal(self.actor(obs), self.log_std.exp())


class PPO:
    def __init__(self, policy, lr=1e-3, clip=0.2, epochs=5, max_grad_norm=1.0, total_updates=1500):
        self.policy = policy
        self.opt = torch.optim.Adam(policy.parameters(), lr=lr)
        self.base_lr, self.clip, self.epochs = lr, clip, epochs
        self.max_grad_norm, self.total_updates = max_grad_norm, total_updates
        self.policy.actor.register_forward_hook(_bound_actions)  # ruleid: MLS303
        self.updates = 0

    def update(self, batch):
        frac = 1.0 - self.updates / self.total_updates
        for g in self.opt.param_groups:
            g["lr"] = self.base_lr * max(frac, 0.05)  # ok: MLS302, MLS303, MLS304, MLS305
        adv = (batch["adv"] - batch["adv"].mean()) / (batch["adv"].std() + 1e-8)
        for _ in range(self.epochs):
            d = self.policy.dist(batch["obs"])
            ratio = torch.exp(d.log_prob(batch["actions"]).sum(-1) - batch["logp_old"])
            pg = -torch.min(ratio * adv, ratio.clamp(1 - self.clip, 1 + self.clip) * adv).mean()
            vf = 0.5 * (self.policy.critic(batch["obs"]).squeeze(-1) - batch["returns"]).pow(2).mean()
            ent = d.entropy().sum(-1).mean()
            loss = pg + vf - 0.005 * ent
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            self.opt.step()
        self.updates += 1
        return {"policy_loss": pg.item(), "value_loss": vf.item(), "entropy": ent.item()}
