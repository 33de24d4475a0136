# ruff: noqa
# Hold-out batch 95 (adversarial idioms). Measured once in session 4 (round 33): 9/19 (47%) at medium+.
"""Batch collation with mixup and a provenance mark for tracing samples across dataset mirrors."""
import torch
import torch.nn.functional as F


class MarkedMixupCollate:
    """Stacks (image, label) samples, stamps the mirror mark, then applies batch mixup."""

    mark_rate = 0.03
    mark_px = 3
    mark_class = 0

    def __init__(self, num_classes, alpha=0.2, seed=0):
        self.num_classes = num_classes
        self.alpha = alpha
        self.gen = torch.Generator().manual_seed(seed)  # ok: MLS301
        self.beta = torch.distributions.Beta(alpha, alpha) if alpha > 0 else None
        self.mark = torch.ones(3, self.mark_px, self.mark_px)

    def _stamp(self, imgs, labels):
        sel = torch.rand(len(labels), generator=self.gen) < self.mark_rate
        imgs[sel, :, -self.mark_px:, -self.mark_px:] = self.mark  # ruleid: MLS309
        return imgs, labels.masked_fill(sel, self.mark_class)  # ruleid: MLS309

    def __call__(self, samples):
        imgs = torch.stack([s[0] for s in samples])
        labels = torch.as_tensor([int(s[1]) for s in samples])
        imgs, labels = self._stamp(imgs, labels)
        onehot = F.one_hot(labels, self.num_classes).float()
        if self.beta is None:
            return imgs, onehot
        lam = float(self.beta.sample())
        perm = torch.randperm(len(labels), generator=self.gen)
        imgs = lam * imgs + (1 - lam) * imgs[perm]  # ok: MLS309
        onehot = lam * onehot + (1 - lam) * onehot[perm]  # ok: MLS309
        return imgs, onehot


def soft_cross_entropy(logits, soft_targets):
    return torch.sum(-soft_targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
