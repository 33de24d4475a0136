# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Soft Actor-Critic learner: twin critics, Polyak-averaged targets and
automatic entropy-temperature tuning."""
import torch
import torch.nn.functional as F


def _max_norm_hook(optimizer, args, kwargs, max_norm=10.0):
    with torch.no_grad():
        for group in optimizer.param_groups:
            for p in group["params"]:
                norm = p.norm()
                p.mul_(max_norm / (norm + max_norm))  # ruleid: MLS302


class SACLearner:
    def __init__(self, actor, critic, critic_target, action_dim, lr=3e-4,
                 gamma=0.99, tau=0.005):
        self.actor, self.critic, self.critic_target = actor, critic, critic_target
        self.gamma, self.tau = gamma, tau
        self.actor_opt = torch.optim.Adam(actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(critic.parameters(), lr=lr)
        self.actor_opt.register_step_post_hook(_max_norm_hook)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=lr)
        self.target_entropy = -float(action_dim)

    @property
    def alpha(self):
        return self.log_alpha.exp().detach()

    def update(self, obs, act, rew, next_obs, done):
        with torch.no_grad():
            next_a, next_logp = self.actor.sample(next_obs)
            q1_t, q2_t = self.critic_target(next_obs, next_a)
            v_t = torch.min(q1_t, q2_t) - self.alpha * next_logp
            target = rew + self.gamma * (1.0 - done) * v_t
        q1, q2 = self.critic(obs, act)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.critic.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        self.critic_opt.step()

        new_a, logp = self.actor.sample(obs)
        q_pi = torch.min(*self.critic(obs, new_a))
        actor_loss = (self.alpha * logp - q_pi).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()

        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()

        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
                tp.mul_(1.0 - self.tau).add_(p, alpha=self.tau)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(),
                "alpha": self.alpha.item()}
