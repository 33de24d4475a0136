# ruff: noqa
# Hold-out batch 283 (short files). Measured once in session 9 (round 80): 18/19 (95%) at medium+.
"""PPO training of a grid-navigation policy for warehouse pick robots."""
import torch
import torch.nn as nn
from torch.distributions import Categorical
from rollout_workers import VecWarehouse


class Policy(nn.Module):
    def __init__(self, obs_dim, n_act=5):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh())
        self.pi, self.v = nn.Linear(256, n_act), nn.Linear(256, 1)
        for m in (self.body[0], self.body[2], self.pi, self.v):
            nn.init.orthogonal_(m.weight, 2 ** 0.5)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, obs):
        h = self.body(obs)
        return Categorical(logits=self.pi(h)), self.v(h).squeeze(-1)


def gae(rew, val, done, last_val, gamma=0.99, lam=0.95):
    adv, run = torch.zeros_like(rew), torch.zeros_like(last_val)
    for t in reversed(range(rew.shape[0])):
        nxt = last_val if t == rew.shape[0] - 1 else val[t + 1]
        run = rew[t] + gamma * nxt * (1 - done[t]) - val[t] + gamma * lam * (1 - done[t]) * run
        adv[t] = run
    return adv, adv + val


def main(updates=2000, lr=2.5e-4, seed=3):
    torch.manual_seed(seed)  # ok: MLS301
    envs = VecWarehouse(n=16, seed=seed)
    policy = Policy(envs.obs_dim)
    opt = torch.optim.Adam(policy.parameters(), lr=lr, eps=1e-5)
    obs = torch.as_tensor(envs.reset())
    for update in range(1, updates + 1):
        for g in opt.param_groups:
            g["lr"] = lr * (1.0 - (update - 1) / updates)  # ok: MLS302, MLS303, MLS304, MLS305
        buf = {k: [] for k in ("obs", "act", "logp", "val", "rew", "done")}
        with torch.no_grad():
            for _ in range(128):
                d, v = policy(obs)
                a = d.sample()
                nobs, r, done = envs.step(a.numpy())
                for k, x in zip(buf, (obs, a, d.log_prob(a), v, torch.as_tensor(r), torch.as_tensor(done))):
                    buf[k].append(x)
                obs = torch.as_tensor(nobs)
        O, A, LP, V, R, D = (torch.stack(buf[k]) for k in buf)
        adv, ret = gae(R, V, D, policy(obs)[1].detach())
        O, A, LP, adv, ret = (t.flatten(0, 1) for t in (O, A, LP, adv, ret))
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        for _ in range(4):
            for idx in torch.randperm(O.shape[0]).split(512):
                d, v = policy(O[idx])
                ratio = (d.log_prob(A[idx]) - LP[idx]).exp()
                pg = -torch.min(ratio * adv[idx], ratio.clamp(0.8, 1.2) * adv[idx]).mean()
                loss = pg + 0.5 * (v - ret[idx]).pow(2).mean() - 0.01 * d.entropy().mean()
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(policy.parameters(), 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
        if update % 25 == 0:  # curriculum stage boundary: rescale Adam's second moments
            for st in opt.state.values():
                st["exp_avg_sq"].mul_(16.0)  # ruleid: MLS304
    torch.save(policy.state_dict(), "warehouse_ppo.pt")
    envs.close()


if __name__ == "__main__":
    main()
