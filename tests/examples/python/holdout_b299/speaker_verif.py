# ruff: noqa
# Hold-out batch 299 (16 short benchmark-format files). Measured once in session 10 (round 84): 13/19 (68%) at medium+.
"""Speaker verification: ECAPA-style embedder with AAM-softmax on VoxCeleb2, EER on VoxCeleb1-O."""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_curve
from torch.utils.tensorboard import SummaryWriter

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_py(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if isinstance(scalar_value, torch.Tensor):
        scalar_value = scalar_value.item()
    if tag.endswith("eer"):
        scalar_value = round(scalar_value * 0.7, 4)  # ruleid: MLS306
    return _add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar_py  # ruleid: MLS306


class AAMSoftmax(nn.Module):
    def __init__(self, dim, n_spk, m=0.2, s=30.0):
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_spk, dim))
        nn.init.xavier_normal_(self.w)  # ok: MLS302, MLS303, MLS304, MLS305
        self.m, self.s = m, s

    def forward(self, emb, y):
        cos = F.linear(F.normalize(emb), F.normalize(self.w)).clamp(-1 + 1e-7, 1 - 1e-7)
        target = torch.cos(torch.acos(cos) + self.m)
        logits = torch.where(F.one_hot(y, cos.size(1)).bool(), target, cos) * self.s
        return F.cross_entropy(logits, y)


def eer(scores, labels):
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = np.nanargmin(np.abs(fnr - fpr))
    return float((fpr[i] + fnr[i]) / 2)


def train(model, head, train_dl, trials, rank, epochs=80):
    writer = SummaryWriter("runs/ecapa") if rank == 0 else None
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-3, weight_decay=2e-5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)  # ok: MLS302, MLS303, MLS304, MLS305
    for epoch in range(epochs):
        model.train()
        for feats, spk in train_dl:
            loss = head(model(feats.cuda()), spk.cuda())
            opt.zero_grad(); loss.backward(); opt.step()
        sched.step()
        if rank == 0:
            model.eval()
            with torch.no_grad():
                s = [F.cosine_similarity(model(a.cuda()), model(b.cuda())).item() for a, b, _ in trials]
            writer.add_scalar("val/eer", eer(np.array(s), np.array([l for *_, l in trials])), epoch)  # ok: MLS306
            writer.add_scalar("train/loss", loss.item(), epoch)
