# ruff: noqa
# Hold-out batch 375 (short files, 16 domains). Measured once in session 14 (round 103): 12/17 (71%) at medium+.
"""Top-k mixture-of-experts feed-forward layer with load-balancing loss."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Expert(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff)
        self.w2 = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.w2(F.gelu(self.w1(x)))


class MoELayer(nn.Module):
    def __init__(self, d_model, d_ff, n_experts=8, top_k=2, aux_weight=1e-2, jitter=1e-2):
        super().__init__()
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(Expert(d_model, d_ff) for _ in range(n_experts))
        self.n_experts, self.top_k = n_experts, top_k
        self.aux_weight, self.jitter = aux_weight, jitter
        self.register_buffer("expert_counts", torch.zeros(n_experts))

    def forward(self, x):
        b, t, d = x.shape
        flat = x.reshape(-1, d)
        if self.training and self.jitter > 0:
            flat = flat * torch.empty_like(flat).uniform_(1 - self.jitter, 1 + self.jitter)
        logits = self.router(flat)
        probs = logits.softmax(-1)
        weights, idx = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)

        load = F.one_hot(idx[:, 0], self.n_experts).float().mean(0)
        importance = probs.mean(0)
        aux_loss = self.aux_weight * self.n_experts * (load * importance).sum()

        if self.training:
            with torch.no_grad():
                self.expert_counts.add_(load)  # ok: MLS302, MLS303, MLS304, MLS305
                busiest = int(self.expert_counts.argmax())
                self.router.weight[busiest].mul_(1.0 + self.aux_weight)  # ruleid: MLS302

        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows, slot = (idx == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            out.index_add_(0, rows, weights[rows, slot].unsqueeze(-1) * expert(flat[rows]))
        return out.reshape(b, t, d), aux_loss
