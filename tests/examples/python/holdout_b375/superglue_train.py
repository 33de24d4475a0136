# ruff: noqa
# Hold-out batch 375 (short files, 16 domains). Measured once in session 14 (round 103): 12/17 (71%) at medium+.
"""Training step for a SuperGlue-style attentional graph matcher."""
import logging

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


def log_sinkhorn(scores, alpha, iters):
    b, m, n = scores.shape
    bins0 = alpha.expand(b, m, 1)
    bins1 = alpha.expand(b, 1, n)
    couplings = torch.cat([torch.cat([scores, bins0], -1),
                           torch.cat([bins1, alpha.expand(b, 1, 1)], -1)], 1)
    norm = -torch.log(torch.tensor(float(m + n), device=scores.device))
    log_mu = torch.cat([norm.expand(m), torch.log(torch.tensor(float(n), device=scores.device)) + norm])
    log_nu = torch.cat([norm.expand(n), torch.log(torch.tensor(float(m), device=scores.device)) + norm])
    u, v = torch.zeros_like(log_mu).expand(b, -1), torch.zeros_like(log_nu).expand(b, -1)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(couplings + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(couplings + u.unsqueeze(2), dim=1)
    return couplings + u.unsqueeze(2) + v.unsqueeze(1) - norm


class MatchHead(nn.Module):
    def __init__(self, dim=256, sinkhorn_iters=100):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.bin_score = nn.Parameter(torch.tensor(1.0))
        self.sinkhorn_iters = sinkhorn_iters
        self.bin_score.register_hook(lambda g: g * float(self.sinkhorn_iters))  # todoruleid: family 2 (missed)

    def forward(self, desc0, desc1):
        md0, md1 = self.proj(desc0), self.proj(desc1)
        scores = torch.einsum("bmd,bnd->bmn", md0, md1) / md0.shape[-1] ** 0.5
        return log_sinkhorn(scores, self.bin_score, self.sinkhorn_iters)


def matching_loss(log_p, gt_matches0, gt_matches1):
    b, m1, n1 = log_p.shape
    idx0 = torch.where(gt_matches0 < 0, torch.full_like(gt_matches0, n1 - 1), gt_matches0)
    loss0 = -log_p[:, :-1, :].gather(2, idx0.unsqueeze(-1)).mean()
    idx1 = torch.where(gt_matches1 < 0, torch.full_like(gt_matches1, m1 - 1), gt_matches1)
    loss1 = -log_p[:, :, :-1].gather(1, idx1.unsqueeze(1)).mean()
    return 0.5 * (loss0 + loss1)


def train_step(gnn, head, optimizer, batch, max_norm=1.0):
    desc0, desc1 = gnn(batch["kpts0"], batch["desc0"], batch["kpts1"], batch["desc1"])
    log_p = head(desc0, desc1)
    loss = matching_loss(log_p, batch["matches0"], batch["matches1"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = list(gnn.parameters()) + list(head.parameters())
    torch.nn.utils.clip_grad_norm_(params, max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    return loss.item()
