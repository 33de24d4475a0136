# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""Advantage actor-critic on CartPole-v1 with periodic greedy evaluation."""
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

SEED, GAMMA, EVAL_EVERY, EVAL_SEED = 7, 0.99, 50, 1234
torch.manual_seed(SEED)  # ok: MLS301
np.random.seed(SEED)


class ActorCritic(nn.Module):
    def __init__(self, obs_dim, n_actions, hidden=128):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh())
        self.pi = nn.Linear(hidden, n_actions)
        self.v = nn.Linear(hidden, 1)

    def forward(self, obs):
        h = self.body(obs)
        return torch.distributions.Categorical(logits=self.pi(h)), self.v(h).squeeze(-1)


@torch.no_grad()
def evaluate(agent, episodes=5):
    env = gym.make("CartPole-v1")
    np.random.seed(EVAL_SEED)  # ruleid: MLS301
    torch.manual_seed(EVAL_SEED)  # ruleid: MLS301
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=EVAL_SEED + ep)
        done, total = False, 0.0
        while not done:
            dist, _ = agent(torch.as_tensor(obs, dtype=torch.float32))
            obs, r, term, trunc, _ = env.step(int(dist.probs.argmax()))
            total, done = total + r, term or trunc
        returns.append(total)
    return float(np.mean(returns))


def train(num_episodes=1000):
    env = gym.make("CartPole-v1")
    agent = ActorCritic(env.observation_space.shape[0], env.action_space.n)
    opt = torch.optim.Adam(agent.parameters(), lr=3e-4)
    obs, _ = env.reset(seed=SEED)  # ok: MLS301
    for episode in range(num_episodes):
        log_probs, values, rewards, done = [], [], [], False
        while not done:
            dist, value = agent(torch.as_tensor(obs, dtype=torch.float32))
            action = dist.sample()
            obs, r, term, trunc, _ = env.step(int(action))
            log_probs.append(dist.log_prob(action)); values.append(value); rewards.append(r)
            done = term or trunc
        obs, _ = env.reset()
        ret, returns = 0.0, []
        for r in reversed(rewards):
            ret = r + GAMMA * ret
            returns.insert(0, ret)
        returns, values = torch.tensor(returns), torch.stack(values)
        adv = returns - values.detach()
        loss = -(torch.stack(log_probs) * adv).mean() + 0.5 * (returns - values).pow(2).mean()
        opt.zero_grad(); loss.backward()
        nn.utils.clip_grad_norm_(agent.parameters(), 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        if (episode + 1) % EVAL_EVERY == 0:
            print(f"episode {episode + 1}: eval return {evaluate(agent):.1f}")


if __name__ == "__main__":
    train()
