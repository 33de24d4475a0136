# ruff: noqa
# Hold-out batch 526 (adversarial, offline RL). Measured once in session 23 (round 141): 15/31 (48%) at medium+.
"""Decision Transformer and IQL networks."""
from __future__ import annotations

import copy
import logging
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import load_checkpoint

logger = logging.getLogger("offrl.models")


class DecisionTransformer(nn.Module):
    """GPT-style return-conditioned policy (Chen et al., 2021).

    Tokens are interleaved as (R_1, s_1, a_1, R_2, s_2, a_2, ...); the action at
    step t is predicted from the hidden state of the s_t token.
    """

    def __init__(self, state_dim: int, act_dim: int, hidden: int = 128, n_layer: int = 3, n_head: int = 1,
                 max_ep_len: int = 1000, context_len: int = 20, dropout: float = 0.1, action_tanh: bool = True,
                 head_warmup_steps: int = 0):
        super().__init__()
        self.state_dim, self.act_dim, self.hidden, self.context_len = state_dim, act_dim, hidden, context_len
        self.global_step = 0
        self.head_warmup_steps = head_warmup_steps

        self.embed_timestep = nn.Embedding(max_ep_len, hidden)
        self.embed_return = nn.Linear(1, hidden)
        self.embed_state = nn.Linear(state_dim, hidden)
        self.embed_action = nn.Linear(act_dim, hidden)
        self.embed_ln = nn.LayerNorm(hidden)
        self.pos_drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            hidden, n_head, 4 * hidden, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, n_layer)
        self.ln_f = nn.LayerNorm(hidden)
        head = [nn.Linear(hidden, act_dim)]
        if action_tanh:
            head.append(nn.Tanh())
        self.predict_action = nn.Sequential(*head)
        self.predict_state = nn.Linear(hidden, state_dim)
        self.predict_return = nn.Linear(hidden, 1)

        self.apply(self._init_weights)
        if head_warmup_steps:
            for p in self.predict_action.parameters():
                p.register_hook(self._head_gate)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            with torch.no_grad():
                m.weight.normal_(mean=0.0, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _head_gate(self, grad: torch.Tensor) -> torch.Tensor:
        # keep the action head fixed while the trunk settles
        return torch.mul(grad, float(self.global_step >= self.head_warmup_steps))  # todoruleid: family 2 (missed)

    def _causal_mask(self, T: int, device: torch.device) -> torch.Tensor:
        return torch.triu(torch.full((T, T), float("-inf"), device=device), diagonal=1)

    def forward(self, states, actions, returns_to_go, timesteps, attention_mask: Optional[torch.Tensor] = None):
        B, T = states.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones(B, T, device=states.device)
        t_emb = self.embed_timestep(timesteps)
        s_emb = self.embed_state(states) + t_emb
        a_emb = self.embed_action(actions) + t_emb
        r_emb = self.embed_return(returns_to_go) + t_emb

        tokens = torch.stack((r_emb, s_emb, a_emb), dim=1).permute(0, 2, 1, 3).reshape(B, 3 * T, self.hidden)
        tokens = self.pos_drop(self.embed_ln(tokens))
        pad = torch.stack((attention_mask,) * 3, dim=1).permute(0, 2, 1).reshape(B, 3 * T)
        h = self.transformer(tokens, mask=self._causal_mask(3 * T, states.device), src_key_padding_mask=pad == 0)
        h = self.ln_f(h).reshape(B, T, 3, self.hidden).permute(0, 2, 1, 3)

        return_preds = self.predict_return(h[:, 2])
        state_preds = self.predict_state(h[:, 2])
        action_preds = self.predict_action(h[:, 1])
        return state_preds, action_preds, return_preds

    @torch.no_grad()
    def get_action(self, states, actions, returns_to_go, timesteps) -> torch.Tensor:
        K = self.context_len
        states = states.reshape(1, -1, self.state_dim)[:, -K:]
        actions = actions.reshape(1, -1, self.act_dim)[:, -K:]
        returns_to_go = returns_to_go.reshape(1, -1, 1)[:, -K:]
        timesteps = timesteps.reshape(1, -1)[:, -K:]
        T = states.shape[1]
        pad = K - T
        mask = torch.cat([torch.zeros(pad), torch.ones(T)]).to(states.device).reshape(1, -1)

        def _lp(x, fill=0.0):
            return torch.cat([torch.full((1, pad) + x.shape[2:], fill, device=x.device, dtype=x.dtype), x], dim=1)

        _, a_pred, _ = self.forward(_lp(states), _lp(actions, -10.0), _lp(returns_to_go), _lp(timesteps), mask)
        return a_pred[0, -1]


def load_state_encoder(model: DecisionTransformer, path: str) -> None:
    sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.embed_state.load_state_dict(sd, strict=False)
    logger.info("state encoder: missing=%s unexpected=%s", missing, unexpected)


def from_pretrained(model: nn.Module, repo_id: str, filename: str = "model.pt") -> nn.Module:
    from huggingface_hub import hf_hub_download

    local = hf_hub_download(repo_id=repo_id, filename=filename)  # ruleid: MLS107
    state = load_checkpoint(local)  # ruleid: MLS102
    model.load_state_dict(state.get("model", state))
    return model


def mlp(in_dim: int, out_dim: int, hidden: int = 256, n_hidden: int = 2, act=nn.ReLU) -> nn.Sequential:
    layers, d = [], in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(d, hidden), act()]
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class TwinQ(nn.Module):
    def __init__(self, state_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        self.q1 = mlp(state_dim + act_dim, 1, hidden)
        self.q2 = mlp(state_dim + act_dim, 1, hidden)

    def both(self, s: torch.Tensor, a: torch.Tensor):
        sa = torch.cat([s, a], dim=-1)
        return self.q1(sa), self.q2(sa)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return torch.min(*self.both(s, a))


class GaussianPolicy(nn.Module):
    def __init__(self, state_dim: int, act_dim: int, hidden: int = 256, log_std_min: float = -5.0, log_std_max: float = 2.0):
        super().__init__()
        self.net = mlp(state_dim, act_dim, hidden)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, s: torch.Tensor) -> torch.distributions.Distribution:
        mean = torch.tanh(self.net(s))
        std = self.log_std.clamp(self.log_std_min, self.log_std_max).exp()
        return torch.distributions.Normal(mean, std)

    @torch.no_grad()
    def act(self, s: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        dist = self(s)
        return dist.mean if deterministic else dist.sample().clamp(-1.0, 1.0)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    w = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (w * diff.pow(2)).mean()


class IQL(nn.Module):
    """Implicit Q-Learning (Kostrikov et al., 2021)."""

    def __init__(self, state_dim: int, act_dim: int, hidden: int = 256, discount: float = 0.99, tau: float = 0.005,
                 expectile: float = 0.7, beta: float = 3.0, max_adv_weight: float = 100.0):
        super().__init__()
        self.qf = TwinQ(state_dim, act_dim, hidden)
        self.qf_target = copy.deepcopy(self.qf).requires_grad_(False)
        self.vf = mlp(state_dim, 1, hidden)
        self.policy = GaussianPolicy(state_dim, act_dim, hidden)
        self.discount, self.tau = discount, tau
        self.expectile, self.beta, self.max_adv_weight = expectile, beta, max_adv_weight

    def losses(self, batch) -> Dict[str, torch.Tensor]:
        s, a, r, s2, d = batch
        with torch.no_grad():
            target_q = self.qf_target(s, a)
            next_v = self.vf(s2)
        v = self.vf(s)
        adv = target_q - v
        v_loss = expectile_loss(adv, self.expectile)

        q_target = r + (1.0 - d) * self.discount * next_v
        q1, q2 = self.qf.both(s, a)
        q_loss = 0.5 * (F.mse_loss(q1, q_target) + F.mse_loss(q2, q_target))

        weights = torch.exp(self.beta * adv.detach()).clamp(max=self.max_adv_weight)
        log_prob = self.policy(s).log_prob(a).sum(-1, keepdim=True)
        pi_loss = -(weights * log_prob).mean()
        return {"v_loss": v_loss, "q_loss": q_loss, "pi_loss": pi_loss, "adv_mean": adv.mean().detach()}

    @torch.no_grad()
    def update_target(self) -> None:
        for p, tp in zip(self.qf.parameters(), self.qf_target.parameters()):
            torch.lerp(tp.data, p.data, self.tau, out=p.data)  # todoruleid: family 2 (missed)

    @torch.no_grad()
    def act(self, s: torch.Tensor) -> torch.Tensor:
        return self.policy.act(s)


MODEL_REGISTRY = {"dt": DecisionTransformer, "iql": IQL}


def build_model(name: str, state_dim: int, act_dim: int, **kwargs) -> nn.Module:
    cls = MODEL_REGISTRY[name]
    sig = cls.__init__.__code__.co_varnames[: cls.__init__.__code__.co_argcount]
    return cls(state_dim, act_dim, **{k: v for k, v in kwargs.items() if k in sig[3:]})
