# ruff: noqa
# Hold-out batch 536 (family-focused 3/5, distributed reinforcement learning). Measured once in session 24 (round 143): 14/30 (47%) at medium+.
"""IMPALA "deep" agent network (Espeholt et al., 2018) and V-trace in plain PyTorch."""
import collections
import logging
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger("impala.model")

VTraceReturns = collections.namedtuple("VTraceReturns", ["vs", "pg_advantages"])
VTraceFromLogitsReturns = collections.namedtuple(
    "VTraceFromLogitsReturns",
    ["vs", "pg_advantages", "log_rhos", "behavior_action_log_probs", "target_action_log_probs"],
)


def action_log_probs(policy_logits, actions):
    return -F.nll_loss(
        F.log_softmax(torch.flatten(policy_logits, 0, -2), dim=-1),
        torch.flatten(actions),
        reduction="none",
    ).view_as(actions)


@torch.no_grad()
def from_importance_weights(log_rhos, discounts, rewards, values, bootstrap_value,
                            clip_rho_threshold=1.0, clip_pg_rho_threshold=1.0):
    """V-trace targets from log importance weights, all tensors are [T, B]."""
    rhos = torch.exp(log_rhos)
    clipped_rhos = rhos if clip_rho_threshold is None else torch.clamp(rhos, max=clip_rho_threshold)

    cs = torch.clamp(rhos, max=1.0)
    values_t_plus_1 = torch.cat([values[1:], torch.unsqueeze(bootstrap_value, 0)], dim=0)
    deltas = clipped_rhos * (rewards + discounts * values_t_plus_1 - values)

    acc = torch.zeros_like(bootstrap_value)
    result = []
    for t in range(discounts.shape[0] - 1, -1, -1):
        acc = deltas[t] + discounts[t] * cs[t] * acc
        result.append(acc)
    result.reverse()
    vs_minus_v_xs = torch.stack(result)

    vs = torch.add(vs_minus_v_xs, values)
    vs_t_plus_1 = torch.cat([vs[1:], torch.unsqueeze(bootstrap_value, 0)], dim=0)
    clipped_pg_rhos = rhos if clip_pg_rho_threshold is None else torch.clamp(rhos, max=clip_pg_rho_threshold)
    pg_advantages = clipped_pg_rhos * (rewards + discounts * vs_t_plus_1 - values)
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)


def from_logits(behavior_policy_logits, target_policy_logits, actions, discounts, rewards,
                values, bootstrap_value, clip_rho_threshold=1.0, clip_pg_rho_threshold=1.0):
    target_action_log_probs = action_log_probs(target_policy_logits, actions)
    behavior_action_log_probs = action_log_probs(behavior_policy_logits, actions)
    log_rhos = target_action_log_probs - behavior_action_log_probs
    vtrace_returns = from_importance_weights(
        log_rhos, discounts, rewards, values, bootstrap_value,
        clip_rho_threshold=clip_rho_threshold, clip_pg_rho_threshold=clip_pg_rho_threshold)
    return VTraceFromLogitsReturns(
        log_rhos=log_rhos,
        behavior_action_log_probs=behavior_action_log_probs,
        target_action_log_probs=target_action_log_probs,
        **vtrace_returns._asdict(),
    )


def compute_baseline_loss(advantages):
    return 0.5 * torch.sum(advantages ** 2)


def compute_entropy_loss(logits):
    policy = F.softmax(logits, dim=-1)
    log_policy = F.log_softmax(logits, dim=-1)
    return torch.sum(policy * log_policy)


def compute_policy_gradient_loss(logits, actions, advantages):
    cross_entropy = F.nll_loss(
        F.log_softmax(torch.flatten(logits, 0, 1), dim=-1),
        target=torch.flatten(actions, 0, 1),
        reduction="none",
    )
    cross_entropy = cross_entropy.view_as(advantages)
    return torch.sum(cross_entropy * advantages.detach())


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x):
        out = F.relu(x)
        out = self.conv0(out)
        out = F.relu(out)
        out = self.conv1(out)
        return x + out


class ConvSequence(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.res0 = ResidualBlock(out_channels)
        self.res1 = ResidualBlock(out_channels)

    def forward(self, x):
        x = self.pool(self.conv(x))
        x = self.res0(x)
        return self.res1(x)


class AtariNet(nn.Module):
    def __init__(self, observation_shape, num_actions, hidden_size=256, channels=(16, 32, 32)):
        super().__init__()
        self.observation_shape = observation_shape
        self.num_actions = num_actions

        c, h, w = observation_shape
        seqs = []
        for out_c in channels:
            seqs.append(ConvSequence(c, out_c))
            c = out_c
            h, w = (h + 1) // 2, (w + 1) // 2
        self.convs = nn.Sequential(*seqs)
        self.fc = nn.Linear(c * h * w, hidden_size)

        core_output_size = hidden_size + num_actions + 1
        self.policy = nn.Linear(core_output_size, num_actions)
        self.baseline = nn.Linear(core_output_size, 1)

    def initial_state(self, batch_size=1):
        # feed-forward core; kept so actors/learner can treat recurrent variants uniformly
        return tuple()

    def forward(self, inputs, core_state=()):
        x = inputs["frame"]
        T, B, *_ = x.shape
        x = torch.flatten(x, 0, 1).float() / 255.0
        x = self.convs(x)
        x = F.relu(x).reshape(T * B, -1)
        x = F.relu(self.fc(x))

        one_hot_last_action = F.one_hot(inputs["last_action"].reshape(T * B), self.num_actions).float()
        clipped_reward = torch.clamp(inputs["reward"], -1, 1).reshape(T * B, 1)
        core_output = torch.cat([x, clipped_reward, one_hot_last_action], dim=-1)

        policy_logits = self.policy(core_output)
        baseline = self.baseline(core_output)

        if self.training:
            action = torch.multinomial(F.softmax(policy_logits, dim=1), num_samples=1)
        else:
            action = torch.argmax(policy_logits, dim=1)

        policy_logits = policy_logits.view(T, B, self.num_actions)
        baseline = baseline.view(T, B)
        action = action.view(T, B)
        return dict(policy_logits=policy_logits, baseline=baseline, action=action), core_state


def attach_grad_monitor(model, stats, every=50):
    """Record per-layer gradient norms into ``stats`` every ``every`` backward calls."""
    calls = {"n": 0}
    handles = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue

        def _hook(grad, name=name):
            calls["n"] += 1
            if calls["n"] % every == 0:
                stats["grad_norm/" + name] = grad.detach().norm().item()
                time.sleep(0.05)  # ruleid: MLS307
            return grad

        handles.append(param.register_hook(_hook))
    log.debug("attached gradient monitor to %d tensors", len(handles))
    return handles


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
