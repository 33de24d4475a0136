# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""TransE training on FB15k-237 style triples with margin ranking loss.

Entity vectors are renormalised to unit L2 norm before every batch as in the
original paper; negatives corrupt head or tail uniformly at random.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


class TransE(nn.Module):
    def __init__(self, n_ent, n_rel, dim=200, p=1):
        super().__init__()
        self.entity_emb = nn.Embedding(n_ent, dim)
        self.relation_emb = nn.Embedding(n_rel, dim)
        bound = 6 / dim ** 0.5
        nn.init.uniform_(self.entity_emb.weight, -bound, bound)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.uniform_(self.relation_emb.weight, -bound, bound)
        with torch.no_grad():
            self.relation_emb.weight.div_(self.relation_emb.weight.norm(dim=-1, keepdim=True))  # ok: MLS302, MLS303, MLS304, MLS305
        self.p = p

    def renorm_entities(self):
        with torch.no_grad():
            self.entity_emb.weight.copy_(F.normalize(self.entity_emb.weight, p=2, dim=-1))  # ok: MLS302, MLS303, MLS304, MLS305

    def score(self, h, r, t):
        return (self.entity_emb(h) + self.relation_emb(r) - self.entity_emb(t)).norm(p=self.p, dim=-1)


class PlainSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=0.01):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305


def train(triples, n_ent, n_rel, epochs=1000, batch=4096, margin=1.0, seed=0, init_from=None):
    gen = torch.Generator().manual_seed(seed)  # ok: MLS301
    model = TransE(n_ent, n_rel)
    if init_from:
        model.load_state_dict(load_file(init_from))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = PlainSGD(model.parameters(), lr=0.01)
    for _ in range(epochs):
        perm = torch.randperm(len(triples), generator=gen)
        for idx in perm.split(batch):
            h, r, t = triples[idx].unbind(1)
            model.renorm_entities()
            corrupt = torch.randint(0, n_ent, h.shape, generator=gen)
            head_side = torch.rand(h.shape, generator=gen) < 0.5
            h2, t2 = torch.where(head_side, corrupt, h), torch.where(head_side, t, corrupt)
            loss = F.relu(margin + model.score(h, r, t) - model.score(h2, r, t2)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, "transe.safetensors")
    return model
