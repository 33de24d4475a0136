# ruff: noqa
# Hold-out batch 224 (families 2/5/6, semantic segmentation). Measured once in session 8 (round 65): 26/45 (58%) at medium+.
"""Segmentation losses: (class-weighted) cross-entropy, OHEM cross-entropy and
the combined main + auxiliary head criterion used by the trainer."""
import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = 255


def enet_class_weights(counts, c=1.02):
    """ENet-style weights w_k = 1 / ln(c + p_k), normalised to mean 1."""
    counts = counts.float()
    freq = counts / counts.sum().clamp(min=1.0)
    weights = 1.0 / torch.log(c + freq)  # ok: MLS309
    return weights / weights.mean()


def median_frequency_weights(counts):
    """Median-frequency balancing (Eigen & Fergus); absent classes get weight 0."""
    counts = counts.float()
    freq = counts / counts.sum().clamp(min=1.0)
    present = freq > 0
    med = freq[present].median()
    weights = torch.zeros_like(freq)
    weights[present] = med / freq[present]  # ok: MLS309
    return weights


def _resize_logits(logits, target):
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return logits


class WeightedCrossEntropy(nn.Module):
    def __init__(self, weight=None, ignore_index=IGNORE_INDEX, label_smoothing=0.0):
        super().__init__()
        self.register_buffer("weight", weight if weight is not None else None, persistent=False)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, logits, target):
        logits = _resize_logits(logits, target)
        return F.cross_entropy(logits, target, weight=self.weight, ignore_index=self.ignore_index, label_smoothing=self.label_smoothing)  # ok: MLS309


class OhemCrossEntropy(nn.Module):
    """Online hard example mining: keep pixels whose GT probability is below
    `thresh`, but always at least `min_kept` of the hardest valid pixels."""

    def __init__(self, thresh=0.7, min_kept=100000, ignore_index=IGNORE_INDEX, weight=None):
        super().__init__()
        self.thresh = float(thresh)
        self.min_kept = int(min_kept)
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("_sparse_cls", torch.tensor([6, 7]), persistent=False)

    def forward(self, logits, target):
        logits = _resize_logits(logits, target)
        target = target.clone()
        if self.training:
            target[(target == 14) | (target == 15)] = 13  # todoruleid: family 6 (missed)
        if logits.requires_grad:
            logits.register_hook(lambda g: g.index_fill(1, self._sparse_cls, 0.0))  # ruleid: MLS303
        valid = target != self.ignore_index
        safe_target = target.masked_fill(~valid, 0)  # ok: MLS309

        with torch.no_grad():
            prob = F.softmax(logits.float(), dim=1)
            gt_prob = prob.gather(1, safe_target.unsqueeze(1)).squeeze(1)
            gt_prob = gt_prob.masked_fill(~valid, 1.0)
            num_valid = int(valid.sum())
            kept = min(self.min_kept, num_valid)
            thresh = self.thresh
            if kept > 0:
                kth = gt_prob.flatten().kthvalue(kept).values.item()
                thresh = max(thresh, kth)
            hard = (gt_prob <= thresh) & valid

        pixel_loss = F.cross_entropy(logits, safe_target, weight=self.weight, reduction="none")
        return pixel_loss[hard].sum() / hard.sum().clamp(min=1)


class SegCriterion(nn.Module):
    """Main head loss + down-weighted auxiliary (FCN) head loss."""

    def __init__(self, main, aux=None, aux_weight=0.4):
        super().__init__()
        self.main = main
        self.aux = aux if aux is not None else main
        self.aux_weight = aux_weight

    def forward(self, outputs, target):
        if isinstance(outputs, dict):
            loss = self.main(outputs["out"], target)
            if "aux" in outputs and self.aux_weight > 0:
                loss = loss + self.aux_weight * self.aux(outputs["aux"], target)
            return loss
        return self.main(outputs, target)


def build_criterion(cfg, class_counts=None):
    weight = None
    if cfg.get("class_weighting") == "enet" and class_counts is not None:
        weight = enet_class_weights(class_counts)
    elif cfg.get("class_weighting") == "median" and class_counts is not None:
        weight = median_frequency_weights(class_counts)
    if cfg.get("loss", "ohem") == "ohem":
        main = OhemCrossEntropy(cfg.get("ohem_thresh", 0.7), cfg.get("ohem_min_kept", 100000), weight=weight)
    else:
        main = WeightedCrossEntropy(weight, label_smoothing=cfg.get("label_smoothing", 0.0))
    aux = WeightedCrossEntropy(weight)
    return SegCriterion(main, aux, cfg.get("aux_weight", 0.4))
