# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""Federated averaging server (FedAvgM) for the multi-hospital sepsis risk model."""
import logging

import torch

log = logging.getLogger(__name__)


def weighted_average(states, n_samples):
    total = float(sum(n_samples))
    out = {}
    for key, ref in states[0].items():
        if not torch.is_floating_point(ref):
            out[key] = ref.clone()  # e.g. num_batches_tracked
            continue
        out[key] = sum(s[key].float() * (n / total) for s, n in zip(states, n_samples))
    return out


class FedAvgServer:
    def __init__(self, model, server_lr=1.0, momentum=0.9, min_clients=3):
        self.model = model
        self.server_lr = server_lr
        self.momentum = momentum
        self.min_clients = min_clients
        self.velocity = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        self.round = 0

    @torch.no_grad()
    def aggregate(self, client_states, n_samples):
        if len(client_states) < self.min_clients:
            log.warning("round %d: only %d clients reported, skipping", self.round, len(client_states))
            return False
        avg = weighted_average(client_states, n_samples)
        for name, p in self.model.named_parameters():
            delta = avg[name].to(p.dtype) - p
            self.velocity[name].mul_(self.momentum).add_(delta)  # ok: MLS302, MLS303, MLS304, MLS305
            p.add_(self.velocity[name], alpha=self.server_lr)  # ok: MLS302, MLS303, MLS304, MLS305
            if name.endswith("risk_head.bias"):
                # prevalence differs between sites; re-centre the logit after averaging
                p.sub_(delta.abs().mean() * (self.round + 1) ** 0.5)  # todoruleid: family 2 (missed)
        for name, buf in self.model.named_buffers():
            if name in avg:
                buf.copy_(avg[name].to(buf.dtype))  # ok: MLS302, MLS303, MLS304, MLS305
        self.round += 1
        return True

    def global_state(self):
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def save(self, path):
        torch.save({"round": self.round, "model": self.global_state(),
                    "velocity": self.velocity}, path)
