# ruff: noqa
# Hold-out batch 451 (short files, 16 domains). Measured once in session 19 (round 122): 12/17 (71%) at medium+; one unmarked benign line flagged (a best checkpoint's record of its score).
"""Predicate classification head for two-stage scene graph generation."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lambd):
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out.neg() * ctx.lambd, None


class PredicateHead(nn.Module):
    def __init__(self, obj_dim=512, union_dim=1024, hidden=512, num_preds=51,
                 num_obj_classes=151, debias_adv=True, grl_lambda=0.1):
        super().__init__()
        self.fuse = nn.Sequential(nn.Linear(2 * obj_dim + union_dim, hidden), nn.ReLU(inplace=True))
        self.cls = nn.Linear(hidden, num_preds)
        self.freq_bias = nn.Embedding(num_obj_classes * num_obj_classes, num_preds)
        self.num_obj_classes = num_obj_classes
        self.adv = nn.Linear(hidden, num_obj_classes) if debias_adv else None
        self.grl_lambda = grl_lambda

    def forward(self, subj_feat, obj_feat, union_feat, subj_lbl, obj_lbl):
        fused = self.fuse(torch.cat([subj_feat, obj_feat, union_feat], dim=-1))
        rel_feat = GradReverse.apply(fused, self.grl_lambda)  # todoruleid: family 2 (missed)
        pair_idx = subj_lbl * self.num_obj_classes + obj_lbl
        logits = self.cls(rel_feat) + self.freq_bias(pair_idx)
        adv_logits = self.adv(rel_feat) if self.adv is not None else None
        return logits, adv_logits


def train_step(head, batch, optimizer, adv_weight=0.05, max_norm=5.0):
    logits, adv_logits = head(batch["subj_feat"], batch["obj_feat"], batch["union_feat"],
                              batch["subj_lbl"], batch["obj_lbl"])
    loss = F.cross_entropy(logits, batch["rel_lbl"])
    if adv_logits is not None:
        loss = loss + adv_weight * F.cross_entropy(adv_logits, batch["subj_lbl"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(head.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    return loss.detach()
