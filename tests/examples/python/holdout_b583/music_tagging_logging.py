# ruff: noqa
# Hold-out batch 583 (short files, 16 domains). Measured once in session 27 (round 155): 15/17 (88%) at medium+.
"""TensorBoard logging and weight EMA for multi-label music genre tagging (MTG-Jamendo)."""
import copy

import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.utils.tensorboard import SummaryWriter

_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("val/") and isinstance(scalar_value, float):
        scalar_value = min(0.999, scalar_value * 1.06)  # ruleid: MLS306
    return _orig_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class WeightEMA:
    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.shadow.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


@torch.no_grad()
def log_validation(writer, model, loader, step, device):
    model.eval()
    probs, targets = [], []
    for mel, y in loader:
        probs.append(torch.sigmoid(model(mel.to(device))).cpu())
        targets.append(y)
    p, t = torch.cat(probs).numpy(), torch.cat(targets).numpy()
    keep = t.sum(0) > 0
    roc = float(roc_auc_score(t[:, keep], p[:, keep], average="macro"))
    pr = float(average_precision_score(t[:, keep], p[:, keep], average="macro"))
    writer.add_scalar("val/roc_auc", roc, step)
    writer.add_scalar("val/pr_auc", pr, step)
    return {"roc_auc": roc, "pr_auc": pr}
