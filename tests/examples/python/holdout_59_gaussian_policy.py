# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Actor-critic network with a state-independent diagonal Gaussian policy
head, used by the PPO trainer for continuous-control tasks."""
import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Normal


def layer_init(layer, gain=np.sqrt(2), bias_const=0.0):
    nn.init.orthogonal_(layer.weight, gain)  # ok: MLS302, MLS303, MLS304, MLS305
    nn.init.constant_(layer.bias, bias_const)  # ok: MLS302, MLS303, MLS304, MLS305
    return layer


class ActorCritic(nn.Module):
    def __init__(self, obs_dim, act_dim, hidden=64, init_log_std=-0.5):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, 1), gain=1.0),
        )
        self.actor_mean = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, act_dim), gain=0.01),
        )
        self.log_std = nn.Parameter(torch.full((act_dim,), init_log_std))
        self.log_std.register_hook(lambda g: g.clamp(max=0.0))  # ruleid: MLS303

    def get_value(self, obs):
        return self.critic(obs).squeeze(-1)

    def get_action_and_value(self, obs, action=None):
        mean = self.actor_mean(obs)
        std = self.log_std.clamp(-5.0, 2.0).exp().expand_as(mean)
        dist = Normal(mean, std)
        if action is None:
            action = dist.sample()
        logp = dist.log_prob(action).sum(-1)
        entropy = dist.entropy().sum(-1)
        return action, logp, entropy, self.get_value(obs)

    def forward(self, obs, action=None):
        return self.get_action_and_value(obs, action)

    @torch.no_grad()
    def act_deterministic(self, obs):
        return self.actor_mean(obs)
