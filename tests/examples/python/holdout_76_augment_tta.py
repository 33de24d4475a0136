# ruff: noqa
# Hold-out batch 76 (benchmark format, Kaggle-style; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 14/19 (74%) at medium+.
"""Mixup/CutMix collate, flip-TTA inference and TensorBoard logging for the plankton classifier."""
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter


def one_hot_smooth(y, n, eps=0.1):
    return F.one_hot(y, n).float() * (1 - eps) + eps / n  # ok: MLS309


class MixCollate:
    def __init__(self, num_classes, alpha=0.4, cutmix_p=0.5, prob=0.8):
        self.n, self.alpha, self.cutmix_p, self.prob = num_classes, alpha, cutmix_p, prob

    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = one_hot_smooth(torch.tensor([b[1] for b in batch]), self.n)
        if np.random.rand() > self.prob:
            return x, y
        lam = np.random.beta(self.alpha, self.alpha)
        perm = torch.randperm(x.size(0))
        if np.random.rand() < self.cutmix_p:
            h, w = x.shape[-2:]
            rh, rw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
            cy, cx = np.random.randint(h), np.random.randint(w)
            y1, y2 = np.clip(cy - rh // 2, 0, h), np.clip(cy + rh // 2, 0, h)
            x1, x2 = np.clip(cx - rw // 2, 0, w), np.clip(cx + rw // 2, 0, w)
            x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]  # ok: MLS309
            lam = 1 - (y2 - y1) * (x2 - x1) / (h * w)
        else:
            x = lam * x + (1 - lam) * x[perm]
        y = lam * y + (1 - lam) * y[perm]  # ok: MLS309
        return x, y


@torch.no_grad()
def predict_tta(model, loader, device="cuda"):
    model.eval()
    out = []
    for x, _ in loader:
        x = x.to(device)
        views = [x, x.flip(-1), x.flip(-2), x.transpose(-1, -2)]
        probs = torch.stack([model(v).softmax(1) for v in views]).mean(0)
        out.append(probs.cpu())
    return torch.cat(out).numpy()


def log_epoch(writer: SummaryWriter, epoch, train_loss, val_probs, val_y, rank=0):
    if rank != 0:
        return
    p = np.clip(val_probs, 1e-7, 1 - 1e-7)  # ok: MLS306
    nll = -np.log(p[np.arange(len(val_y)), val_y]).mean()
    acc = (val_probs.argmax(1) == val_y).mean()
    writer.add_scalar("loss/train", train_loss, epoch)
    writer.add_scalar("loss/val", nll, epoch)  # ok: MLS306
    writer.add_scalar("acc/val", acc, epoch)
