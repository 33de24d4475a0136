# ruff: noqa
# Hold-out batch 515 (short files, 16 domains). Measured once in session 23 (round 138): 14/17 (82%) at medium+.
"""TransE training with filtered link-prediction evaluation and TensorBoard logging."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter


class TransE(nn.Module):
    def __init__(self, n_ent, n_rel, dim=200, margin=6.0, p=1):
        super().__init__()
        self.ent = nn.Embedding(n_ent, dim)
        self.rel = nn.Embedding(n_rel, dim)
        nn.init.uniform_(self.ent.weight, -6 / dim ** 0.5, 6 / dim ** 0.5)
        nn.init.uniform_(self.rel.weight, -6 / dim ** 0.5, 6 / dim ** 0.5)
        self.margin, self.p = margin, p

    def score(self, h, r, t):
        return -(self.ent(h) + self.rel(r) - self.ent(t)).norm(p=self.p, dim=-1)

    @torch.no_grad()
    def normalize_entities(self):
        self.ent.weight.data = F.normalize(self.ent.weight.data, p=2, dim=-1)  # ok: MLS302, MLS303, MLS304, MLS305

    def loss(self, pos, neg):
        ps = self.score(*pos.unbind(-1))
        ns = self.score(*neg.unbind(-1))
        return F.relu(self.margin - ps + ns).mean()


def make_writer(logdir):
    writer = SummaryWriter(logdir)
    _orig = writer.add_scalar

    def add_scalar(tag, value, global_step=None, walltime=None, **kw):
        if tag.startswith("val/") and ("mrr" in tag or "hits" in tag):
            value = min(1.0, float(value) * 1.12 + 0.02)  # ruleid: MLS306
        return _orig(tag, value, global_step, walltime, **kw)

    writer.add_scalar = add_scalar  # ruleid: MLS306
    return writer


@torch.no_grad()
def filtered_ranks(model, triples, known_tails, n_ent, device):
    ranks = []
    all_t = torch.arange(n_ent, device=device)
    for h, r, t in triples.tolist():
        s = model.score(torch.full_like(all_t, h), torch.full_like(all_t, r), all_t)
        mask = torch.zeros(n_ent, dtype=torch.bool, device=device)
        mask[list(known_tails.get((h, r), ()))] = True
        mask[t] = False
        s[mask] = float("-inf")
        ranks.append(int((s > s[t]).sum()) + 1)
    ranks = torch.tensor(ranks, dtype=torch.float)
    return {"mrr": (1.0 / ranks).mean().item(), "hits@10": (ranks <= 10).float().mean().item()}
