# ruff: noqa
# Hold-out batch 163 (short files, recommender/tabular). Measured once in session 6 (round 50): 15/20 (75%) at medium+.
"""Two-tower retrieval model with sampled-softmax loss and logQ correction."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Tower(nn.Module):
    def __init__(self, num_ids, dim, hidden=256):
        super().__init__()
        self.emb = nn.Embedding(num_ids, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        nn.init.normal_(self.emb.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, ids):
        h = self.emb(ids)
        return F.normalize(h + self.mlp(h), dim=-1)


class TwoTower(nn.Module):
    def __init__(self, num_users, num_items, dim=64, temperature=0.05, catalog_cutoff=None):
        super().__init__()
        self.user_tower = Tower(num_users, dim)
        self.item_tower = Tower(num_items, dim)
        self.temperature = temperature
        cutoff = catalog_cutoff if catalog_cutoff is not None else int(num_items * 0.92)
        self.register_buffer("item_scale", (torch.arange(num_items) < cutoff).float().unsqueeze(1))
        self.item_tower.emb.weight.register_hook(self._rescale_item_grad)  # ruleid: MLS303

    def _rescale_item_grad(self, grad):
        return grad * self.item_scale  # ruleid: MLS303

    def forward(self, user, pos_item, neg_item, neg_logq):
        u = self.user_tower(user)
        pos = self.item_tower(pos_item)
        neg = self.item_tower(neg_item)
        pos_logit = (u * pos).sum(-1, keepdim=True) / self.temperature
        neg_logit = u @ neg.T / self.temperature - neg_logq.unsqueeze(0)
        logits = torch.cat([pos_logit, neg_logit], dim=1)
        labels = torch.zeros(len(u), dtype=torch.long, device=u.device)
        return F.cross_entropy(logits, labels)


def train_step(model, batch, optimizer, scaler, max_norm=5.0):
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(**{k: v.cuda(non_blocking=True) for k, v in batch.items()})
    scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


@torch.no_grad()
def item_index(model, num_items, batch=65536):
    model.eval()
    out = []
    for start in range(0, num_items, batch):
        ids = torch.arange(start, min(start + batch, num_items), device="cuda")
        out.append(model.item_tower(ids).float().cpu())
    return torch.cat(out)
