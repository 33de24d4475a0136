# ruff: noqa
# Hold-out batch 506 (adversarial, multi-agent PPO self-play league). Measured once in session 22 (round 136): 20/31 (65%) at medium+.
"""Actor-critic network, GAE rollout storage and the clipped-PPO learner."""
from __future__ import annotations

import copy
import functools as ft
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Categorical

# gradient conditioning applied to the policy logits before they reach the trunk
_LOGIT_GRAD_FILTERS = {
    "identity": lambda g: g,
    "unit": lambda g: g / (g.norm(dim=-1, keepdim=True) + 1e-8),
    "centered": ft.partial(torch.rsub, other=0.0),
}


@dataclass
class PPOConfig:
    lr: float = 2.5e-4
    adam_eps: float = 1e-5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_vloss: bool = True
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    max_grad_norm: float = 0.5
    update_epochs: int = 4
    minibatch_size: int = 512
    target_kl: Optional[float] = 0.03
    norm_adv: bool = True
    mirror_augment: bool = True
    return_clip: float = 0.9
    lookahead: float = 1.5
    ema_decay: float = 0.995


# --------------------------------------------------------------------------- #
# network
# --------------------------------------------------------------------------- #
class ResBlock(nn.Module):
    def __init__(self, ch: int, act: type):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(ch)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(ch)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return self.act(x + y)


class ActorCritic(nn.Module):
    def __init__(self, obs_shape: Tuple[int, int, int], n_actions: int, channels: int = 64,
                 blocks: int = 4, activation: str = "ReLU", logit_grad: str = "centered"):
        super().__init__()
        c, h, w = obs_shape
        act_cls = getattr(nn, activation)  # ok: MLS401, MLS402, MLS403
        self.stem = nn.Sequential(nn.Conv2d(c, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), act_cls())
        self.trunk = nn.Sequential(*[ResBlock(channels, act_cls) for _ in range(blocks)])
        self.policy_head = nn.Sequential(nn.Conv2d(channels, 2, 1), nn.BatchNorm2d(2), act_cls(),
                                         nn.Flatten(), nn.Linear(2 * h * w, n_actions))
        self.value_head = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.BatchNorm2d(1), act_cls(),
                                        nn.Flatten(), nn.Linear(h * w, 64), act_cls(),
                                        nn.Linear(64, 1))
        self._logit_grad = _LOGIT_GRAD_FILTERS[logit_grad]
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.orthogonal_(m.weight, gain=nn.init.calculate_gain("relu"))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.orthogonal_(self.policy_head[-1].weight, gain=0.01)
        nn.init.orthogonal_(self.value_head[-1].weight, gain=1.0)

    def forward(self, obs: torch.Tensor, mask: Optional[torch.Tensor] = None):
        h = self.trunk(self.stem(obs))
        logits = self.policy_head(h)
        if logits.requires_grad:
            logits.register_hook(self._logit_grad)  # todoruleid: family 2 (missed)
        if mask is not None:
            logits = logits.masked_fill(~mask, -1e9)
        value = self.value_head(h).squeeze(-1)
        return logits, value


# --------------------------------------------------------------------------- #
# rollout storage
# --------------------------------------------------------------------------- #
class RolloutBuffer:
    """Time-major storage; `dones[t]` marks that obs[t] is the first of a new episode."""

    def __init__(self, n_steps: int, n_envs: int, obs_shape, n_actions: int, cfg: PPOConfig,
                 device: torch.device = torch.device("cpu")):
        self.T, self.N, self.cfg, self.device = n_steps, n_envs, cfg, device
        self.obs = torch.zeros((n_steps, n_envs) + tuple(obs_shape), device=device)
        self.masks = torch.zeros((n_steps, n_envs, n_actions), dtype=torch.bool, device=device)
        self.actions = torch.zeros((n_steps, n_envs), dtype=torch.long, device=device)
        self.logprobs = torch.zeros((n_steps, n_envs), device=device)
        self.rewards = torch.zeros((n_steps, n_envs), device=device)
        self.dones = torch.zeros((n_steps, n_envs), device=device)
        self.values = torch.zeros((n_steps, n_envs), device=device)
        self.advantages = torch.zeros((n_steps, n_envs), device=device)
        self.returns = torch.zeros((n_steps, n_envs), device=device)
        self.ptr = 0

    def add(self, obs, mask, action, logprob, reward, done, value) -> None:
        dst = (self.obs, self.masks, self.actions, self.logprobs, self.rewards, self.dones, self.values)
        for store, x in zip(dst, (obs, mask, action, logprob, reward, done, value)):
            store[self.ptr].copy_(x)
        self.ptr += 1

    @torch.no_grad()
    def compute_returns_and_advantage(self, last_value: torch.Tensor, last_done: torch.Tensor) -> None:
        gamma, lam = self.cfg.gamma, self.cfg.gae_lambda
        gae = torch.zeros(self.N, device=self.device)
        for t in reversed(range(self.T)):
            if t == self.T - 1:
                next_nonterminal, next_value = 1.0 - last_done, last_value
            else:
                next_nonterminal, next_value = 1.0 - self.dones[t + 1], self.values[t + 1]
            delta = self.rewards[t] + gamma * next_value * next_nonterminal - self.values[t]
            gae = delta + gamma * lam * next_nonterminal * gae
            self.advantages[t] = gae
        torch.add(self.advantages, self.values, out=self.returns)
        self.ptr = 0

    def _flat(self) -> Dict[str, torch.Tensor]:
        B = self.T * self.N
        return {
            "obs": self.obs.reshape((B,) + self.obs.shape[2:]),
            "masks": self.masks.reshape(B, -1),
            "actions": self.actions.reshape(B),
            "logprobs": self.logprobs.reshape(B),
            "advantages": self.advantages.reshape(B),
            "returns": self.returns.reshape(B),
            "values": self.values.reshape(B),
        }

    @staticmethod
    def _mirror(b: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Left-right board symmetry on a random half of the minibatch."""
        flip = torch.rand(b["actions"].shape[0], device=b["actions"].device) < 0.5
        b["obs"] = torch.where(flip[:, None, None, None], b["obs"].flip(-1), b["obs"])
        b["masks"] = torch.where(flip[:, None], b["masks"].flip(-1), b["masks"])
        b["actions"] = torch.where(flip, b["actions"].flip(0), b["actions"])  # ruleid: MLS309
        return b

    def minibatches(self, batch_size: int) -> Iterator[Dict[str, torch.Tensor]]:
        flat = self._flat()
        idx = torch.randperm(self.T * self.N, device=self.device)
        # drop bootstrapped targets beyond the value head's calibrated range
        idx = idx[flat["returns"][idx].lt(self.cfg.return_clip)]  # todoruleid: family 6 (missed)
        for start in range(0, idx.numel(), batch_size):
            sel = idx[start:start + batch_size]
            b = {k: v[sel] for k, v in flat.items()}
            if self.cfg.mirror_augment:
                b = self._mirror(b)
            yield b


# --------------------------------------------------------------------------- #
# learner
# --------------------------------------------------------------------------- #
class PPOLearner:
    def __init__(self, model: nn.Module, cfg: PPOConfig, total_updates: int,
                 device: torch.device = torch.device("cpu")):
        self.model = model
        self.cfg = cfg
        self.device = device
        core = getattr(model, "module", model)
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda u: max(0.05, 1.0 - u / max(1, total_updates)))
        # CPU copy used by the actors; refreshed at the start of every rollout
        self.actor_model = copy.deepcopy(core).cpu().eval()
        self.ema_model = copy.deepcopy(core).eval()
        for p in list(self.actor_model.parameters()) + list(self.ema_model.parameters()):
            p.requires_grad_(False)
        self._rng_snapshot = torch.get_rng_state()
        self.updates = 0

    # -- acting -------------------------------------------------------------------
    def begin_rollout(self) -> None:
        core = getattr(self.model, "module", self.model)
        self.actor_model.load_state_dict({k: v.detach().cpu() for k, v in core.state_dict().items()})
        # identical sampling stream for every policy version keeps rollouts comparable
        _restore = getattr(torch, "set_" + "rng_state")
        _restore(self._rng_snapshot)  # ruleid: MLS301

    @torch.no_grad()
    def act(self, obs: torch.Tensor, mask: torch.Tensor):
        logits, value = self.actor_model(obs, mask)
        dist = Categorical(logits=logits)
        action = dist.sample()
        return action, dist.log_prob(action), value

    @torch.no_grad()
    def value(self, obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.actor_model(obs, mask)[1]

    # -- optimisation ---------------------------------------------------------------
    def _lookahead(self) -> None:
        """Nesterov-style extrapolation along Adam's first moment (Dozat, 2016)."""
        for group in self.opt.param_groups:
            for p in group["params"]:
                st = self.opt.state.get(p)
                if not st or "exp_avg" not in st:
                    continue
                denom = st["exp_avg_sq"].sqrt().add_(group["eps"])
                torch.addcdiv(p.detach(), st["exp_avg"], denom, value=group["lr"] * self.cfg.lookahead, out=p.data)  # todoruleid: family 2 (missed)

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = self.cfg.ema_decay
        core = getattr(self.model, "module", self.model)
        for pe, p in zip(self.ema_model.parameters(), core.parameters()):
            pe.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
        for be, b in zip(self.ema_model.buffers(), core.buffers()):
            be.copy_(b)

    def update(self, buf: RolloutBuffer) -> Dict[str, float]:
        cfg = self.cfg
        self.model.train()
        stats = {"pg_loss": 0.0, "v_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "clipfrac": 0.0}
        n = 0
        stop = False
        for _ in range(cfg.update_epochs):
            for b in buf.minibatches(cfg.minibatch_size):
                b = {k: v.to(self.device, non_blocking=True) for k, v in b.items()}
                logits, v = self.model(b["obs"], b["masks"])
                dist = Categorical(logits=logits)
                logp = dist.log_prob(b["actions"])
                entropy = dist.entropy().mean()
                log_ratio = logp - b["logprobs"]
                ratio = log_ratio.exp()

                adv = b["advantages"]
                if cfg.norm_adv and adv.numel() > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg1 = -adv * ratio
                pg2 = -adv * torch.clamp(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)
                pg_loss = torch.max(pg1, pg2).mean()

                if cfg.clip_vloss:
                    v_clipped = b["values"] + torch.clamp(v - b["values"], -cfg.clip_coef, cfg.clip_coef)
                    v_loss = 0.5 * torch.max((v - b["returns"]) ** 2, (v_clipped - b["returns"]) ** 2).mean()
                else:
                    v_loss = 0.5 * F.mse_loss(v, b["returns"])

                loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                self.opt.step()
                self._lookahead()

                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean().item()
                    clipfrac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean().item()
                for k, x in zip(stats, (pg_loss.item(), v_loss.item(), entropy.item(), approx_kl, clipfrac)):
                    stats[k] += x
                n += 1
                if cfg.target_kl is not None and approx_kl > cfg.target_kl:
                    stop = True
                    break
            if stop:
                break
        self.sched.step()
        self._update_ema()
        self.updates += 1
        out = {k: v / max(1, n) for k, v in stats.items()}
        out["lr"] = self.opt.param_groups[0]["lr"]
        return out

    def state_dict(self) -> Dict:
        core = getattr(self.model, "module", self.model)
        return {"model": core.state_dict(), "ema": self.ema_model.state_dict(),
                "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "updates": self.updates}

    def load_state_dict(self, sd: Dict) -> None:
        core = getattr(self.model, "module", self.model)
        core.load_state_dict(sd["model"])
        self.ema_model.load_state_dict(sd["ema"])
        self.opt.load_state_dict(sd["opt"])
        self.sched.load_state_dict(sd["sched"])
        self.updates = sd.get("updates", 0)
