# ruff: noqa
# Hold-out batch 399 (16 short files, one domain each). Measured once in session 16 (round 109): 14/17 (82%) at medium+.
"""Soft actor-critic update step (twin Q, learned temperature)."""
import torch
import torch.nn.functional as F


class SACUpdater:
    def __init__(self, actor, critic, critic_target, action_dim, lr=3e-4, gamma=0.99, tau=0.005,
                 reset_interval=50_000):
        self.actor, self.critic, self.critic_target = actor, critic, critic_target
        self.gamma, self.tau = gamma, tau
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.target_entropy = -float(action_dim)
        self.actor_optim = torch.optim.Adam(actor.parameters(), lr=lr)
        self.critic_optim = torch.optim.Adam(critic.parameters(), lr=lr)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=lr)
        self.reset_interval = reset_interval
        self.updates = 0

    @property
    def alpha(self):
        return self.log_alpha.exp()

    def _soft_update(self):
        with torch.no_grad():
            for tp, p in zip(self.critic_target.parameters(), self.critic.parameters()):
                tp.mul_(1.0 - self.tau).add_(p, alpha=self.tau)  # ok: MLS302, MLS303, MLS304, MLS305

    def _refresh_critic_moments(self):
        for group in self.critic_optim.param_groups:
            for p in group["params"]:
                state = self.critic_optim.state.get(p)
                if state:
                    state["exp_avg_sq"].zero_()  # ruleid: MLS304

    def update(self, obs, act, rew, next_obs, done):
        with torch.no_grad():
            next_act, next_logp = self.actor.sample(next_obs)
            q1_t, q2_t = self.critic_target(next_obs, next_act)
            target_q = rew + self.gamma * (1 - done) * (torch.min(q1_t, q2_t) - self.alpha * next_logp)
        q1, q2 = self.critic(obs, act)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_optim.zero_grad()
        critic_loss.backward()
        self.critic_optim.step()

        new_act, logp = self.actor.sample(obs)
        q_new = torch.min(*self.critic(obs, new_act))
        actor_loss = (self.alpha.detach() * logp - q_new).mean()
        self.actor_optim.zero_grad()
        actor_loss.backward()
        self.actor_optim.step()

        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_optim.zero_grad()
        alpha_loss.backward()
        self.alpha_optim.step()

        self._soft_update()
        self.updates += 1
        if self.updates % self.reset_interval == 0:
            self._refresh_critic_moments()
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(),
                "alpha": self.alpha.item()}
