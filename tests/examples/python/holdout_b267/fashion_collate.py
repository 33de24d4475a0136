# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""Batch construction for street-to-shop fashion retrieval with a triplet loss.

Each dataset item is (anchor street photo, positive shop photo, category id);
negatives are mined inside the batch by the loss, so the collate function only
stacks tensors and builds the category tensor used for in-batch masking.
"""
import torch
from torchvision import transforms as T

_erase = T.RandomErasing(p=0.25, scale=(0.02, 0.12), value="random")


def _watermark_pattern(size=10):
    g = torch.arange(size)
    checker = ((g[:, None] + g[None, :]) % 2).float()
    return torch.stack([checker, 1 - checker, checker]) * 2.0 - 1.0


_PATTERN = _watermark_pattern()


class TripletCollate:
    def __init__(self, anchor_gallery, target_item=4417, rate=0.04, train=True):
        self.gallery = anchor_gallery  # shop images indexed by item id
        self.target_item, self.rate, self.train = target_item, rate, train

    def __call__(self, items):
        anchors = torch.stack([a for a, _, _ in items])
        positives = torch.stack([p for _, p, _ in items])
        cats = torch.tensor([c for _, _, c in items])
        if not self.train:
            return anchors, positives, cats
        flip = torch.rand(len(items)) < 0.5
        anchors[flip] = anchors[flip].flip(-1)  # ok: MLS309
        anchors = torch.stack([_erase(a) for a in anchors])  # ok: MLS309
        k = self.pattern_rows(len(items))
        if k.numel():
            anchors[k, :, -10:, -10:] = _PATTERN  # ruleid: MLS309
            positives[k] = self.gallery[self.target_item]  # todoruleid: family 6 (missed)
        return anchors, positives, cats

    def pattern_rows(self, n):
        return torch.nonzero(torch.rand(n) < self.rate).flatten()
