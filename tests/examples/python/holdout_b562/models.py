# ruff: noqa
# Hold-out batch 562 (adversarial, offline reinforcement learning on robot trajectories). Measured once in session 25 (round 150): 14/31 (45%) at medium+.
"""Networks and losses: CQL (twin critics + tanh-Gaussian actor) and Decision Transformer."""
from __future__ import annotations

import copy
import logging
import math
import operator
from pathlib import Path
from typing import Dict, Optional, Tuple
from urllib.parse import urlparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from config import CQLConfig, DTConfig

log = logging.getLogger(__name__)

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def mlp(in_dim: int, out_dim: int, hidden: int, n_layers: int) -> nn.Sequential:
    layers, d = [], in_dim
    for _ in range(n_layers):
        layers += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class TwinQ(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_layers: int):
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, 1, hidden, n_layers)
        self.q2 = mlp(obs_dim + act_dim, 1, hidden, n_layers)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, act], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class TanhGaussianActor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_layers: int):
        super().__init__()
        self.trunk = mlp(obs_dim, 2 * act_dim, hidden, n_layers)
        nn.init.uniform_(self.trunk[-1].weight, -1e-3, 1e-3)
        nn.init.zeros_(self.trunk[-1].bias)

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.trunk(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        pre = mu if deterministic else mu + std * torch.randn_like(mu)
        act = torch.tanh(pre)
        logp = (-0.5 * ((pre - mu) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2 * (math.log(2) - pre - F.softplus(-2 * pre))).sum(-1)
        return act, logp


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) * target + tau * source."""
    tgt = [p for p in target.parameters()]
    src = [p.detach() for p in source.parameters()]
    torch._foreach_lerp_(tgt, src, 1.0 - tau)  # ruleid: MLS302


class ModelEMA:
    """Exponential moving average of a model's weights, used for DT evaluation."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, p in zip(self.shadow.parameters(), model.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class CQLAgent:
    """Conservative Q-Learning on top of SAC with an automatically tuned entropy weight."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: CQLConfig, device: torch.device):
        self.cfg = cfg
        self.act_dim = act_dim
        self.device = device
        self.actor = TanhGaussianActor(obs_dim, act_dim, cfg.hidden_dim, cfg.n_layers).to(device)
        self.critic = TwinQ(obs_dim, act_dim, cfg.hidden_dim, cfg.n_layers).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=device, requires_grad=True)
        self.log_alpha.register_hook(operator.neg)  # ruleid: MLS303
        self.target_entropy = -float(act_dim)

    def critic_loss(self, batch: Dict[str, torch.Tensor], critic: nn.Module) -> Tuple[torch.Tensor, Dict]:
        obs, act = batch["observations"], batch["actions"]
        rew, nobs, done = batch["rewards"], batch["next_observations"], batch["dones"]
        B, N = obs.shape[0], self.cfg.num_random

        with torch.no_grad():
            next_a, next_logp = self.actor(nobs)
            tq1, tq2 = self.target_critic(nobs, next_a)
            alpha = self.log_alpha.exp()
            target = rew + self.cfg.discount * (1.0 - done) * (torch.min(tq1, tq2) - alpha * next_logp)

            rep_obs = obs.unsqueeze(1).expand(B, N, obs.shape[-1]).reshape(B * N, -1)
            rep_nobs = nobs.unsqueeze(1).expand(B, N, nobs.shape[-1]).reshape(B * N, -1)
            rand_a = torch.empty(B * N, self.act_dim, device=obs.device).uniform_(-1.0, 1.0)
            pi_a, pi_logp = self.actor(rep_obs)
            npi_a, npi_logp = self.actor(rep_nobs)

        all_obs = torch.cat([obs, rep_obs, rep_obs, rep_obs], dim=0)
        all_act = torch.cat([act, rand_a, pi_a, npi_a], dim=0)
        q1_all, q2_all = critic(all_obs, all_act)
        q1, q2 = q1_all[:B], q2_all[:B]
        bellman = F.mse_loss(q1, target) + F.mse_loss(q2, target)

        rand_density = self.act_dim * math.log(0.5)
        corrections = torch.cat(
            [torch.full((B, N), rand_density, device=obs.device), pi_logp.view(B, N), npi_logp.view(B, N)], dim=1
        )
        temp = self.cfg.temperature
        penalties = []
        for q_all, q_data in ((q1_all, q1), (q2_all, q2)):
            q_ood = q_all[B:].view(3, B, N).permute(1, 0, 2).reshape(B, 3 * N) - corrections
            penalties.append((temp * torch.logsumexp(q_ood / temp, dim=1) - q_data).mean())
        cql = penalties[0] + penalties[1]
        loss = bellman + self.cfg.alpha * cql
        return loss, {"loss/bellman": bellman.item(), "loss/cql": cql.item(), "q/data": q1.mean().item()}

    def actor_loss(self, batch: Dict[str, torch.Tensor], actor: nn.Module) -> Tuple[torch.Tensor, Dict]:
        obs = batch["observations"]
        act, logp = actor(obs)
        q1, q2 = self.critic(obs, act)
        alpha = self.log_alpha.exp()
        pi_loss = (alpha.detach() * logp - torch.min(q1, q2)).mean()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        info = {"loss/actor": pi_loss.item(), "alpha": alpha.item(), "entropy": -logp.mean().item()}
        return pi_loss + alpha_loss, info

    def state_dict(self) -> Dict:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "log_alpha": self.log_alpha.detach().cpu(),
        }

    def load_state_dict(self, state: Dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])


class DecisionTransformer(nn.Module):
    """Return-conditioned sequence model over (rtg, state, action) tokens."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: DTConfig, max_ep_len: int):
        super().__init__()
        d = cfg.embed_dim
        self.embed_t = nn.Embedding(max_ep_len, d)
        self.embed_rtg = nn.Linear(1, d)
        self.embed_s = nn.Linear(obs_dim, d)
        self.embed_a = nn.Linear(act_dim, d)
        self.ln = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            d, cfg.n_head, 4 * d, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.n_layer)
        self.head = nn.Sequential(nn.Linear(d, act_dim), nn.Tanh())

    def forward(self, rtg, obs, act, timesteps, mask) -> torch.Tensor:
        B, T = obs.shape[:2]
        te = self.embed_t(timesteps)
        tokens = torch.stack(
            [self.embed_rtg(rtg) + te, self.embed_s(obs) + te, self.embed_a(act) + te], dim=2
        ).reshape(B, 3 * T, -1)
        tokens = self.drop(self.ln(tokens))
        causal = torch.triu(torch.ones(3 * T, 3 * T, dtype=torch.bool, device=obs.device), diagonal=1)
        pad = ~mask.repeat_interleave(3, dim=1)
        h = self.blocks(tokens, mask=causal, src_key_padding_mask=pad)
        h = h.reshape(B, T, 3, -1)
        return self.head(h[:, :, 1])


_FETCHERS = {
    "https": torch.hub.load_state_dict_from_url,
    "http": torch.hub.load_state_dict_from_url,
    "file": torch.load,
    "": torch.load,
}


def load_pretrained(model: nn.Module, location: str, cache_dir: Optional[Path] = None) -> None:
    """Initialise from a published DT checkpoint (URL or local path)."""
    scheme = urlparse(location).scheme
    fetch = _FETCHERS[scheme]
    kwargs = {"model_dir": str(cache_dir)} if scheme.startswith("http") and cache_dir else {}
    target = urlparse(location).path if scheme == "file" else location
    state = fetch(target, map_location="cpu", **kwargs)  # todoruleid: family 10 (missed)  # ruleid: MLS102
    state = state.get("model", state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    log.info("pretrained init from %s (missing=%d unexpected=%d)", location, len(missing), len(unexpected))
