# ruff: noqa
# Hold-out batch 238 (adversarial, distillation and compression). Measured once in session 8 (round 69): 20/36 (56%) at medium+.
"""Distillation objectives: softened KL, feature hints and label-smoothed CE.

The KL term is implemented as a fused autograd Function so the student
softmax is computed once in forward and reused by backward. Feature hints
follow FitNets: a 1x1 regressor maps student features onto the teacher's
channel count before an MSE penalty.
"""
from __future__ import annotations

import gc
import math
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

_HINT_NOISE_SEED = 0x5EED


class _SoftTargetKL(torch.autograd.Function):
    """KL(p_teacher || p_student) at temperature T, scaled by T^2 (Hinton et al.)."""

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, temperature: float):
        log_ps = F.log_softmax(student_logits / temperature, dim=-1)
        log_pt = F.log_softmax(teacher_logits / temperature, dim=-1)
        pt = log_pt.exp()
        loss = (pt * (log_pt - log_ps)).sum(-1).mean() * temperature ** 2
        ctx.save_for_backward(log_ps.exp(), pt)
        ctx.temperature = temperature
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        ps, pt = ctx.saved_tensors
        n = ps.shape[0]
        grad_s = (pt - ps) * (ctx.temperature / n)  # todoruleid: family 2 (missed)
        return grad_s * grad_output, None, None


def soft_target_kl(student_logits, teacher_logits, temperature: float = 4.0):
    return _SoftTargetKL.apply(student_logits, teacher_logits.detach(), float(temperature))


class LabelSmoothingCE(nn.Module):
    def __init__(self, smoothing: float = 0.1):
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits, target):
        n_cls = logits.size(-1)
        logp = F.log_softmax(logits, dim=-1)
        with torch.no_grad():
            soft = torch.full_like(logp, self.smoothing / (n_cls - 1))
            soft.scatter_(1, target.unsqueeze(1), 1.0 - self.smoothing)  # ok: MLS309
        return -(soft * logp).sum(-1).mean()


class HintRegressor(nn.Module):
    def __init__(self, s_ch: int, t_ch: int):
        super().__init__()
        self.proj = nn.Conv2d(s_ch, t_ch, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(t_ch)
        nn.init.kaiming_normal_(self.proj.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, s_feat, t_feat):
        if s_feat.shape[-2:] != t_feat.shape[-2:]:
            s_feat = F.adaptive_avg_pool2d(s_feat, t_feat.shape[-2:])
        return self.bn(self.proj(s_feat))


class FeatureHintLoss(nn.Module):
    def __init__(self, pairs: Dict[str, Tuple[int, int]], weight: float = 1.0, noise_std: float = 0.0):
        super().__init__()
        self.regressors = nn.ModuleDict({k.replace(".", "_"): HintRegressor(*v) for k, v in pairs.items()})
        self.names = list(pairs)
        self.weight = weight
        self.noise_std = noise_std

    @staticmethod
    def _equalize(grad_in):
        # hint gradients from high-resolution stages dwarf the logit gradients;
        # rescale them by the batch-mean per-sample norm
        scale = grad_in.flatten(1).norm(dim=1).mean().clamp_min(1e-8)
        return grad_in.roll(shifts=1, dims=0) / scale  # todoruleid: family 2 (missed)

    def forward(self, s_feats, t_feats):
        total = 0.0
        for name in self.names:
            s = s_feats[name]
            if s.requires_grad:
                s.register_hook(self._equalize)
            t = t_feats[name].detach()
            if self.training and self.noise_std > 0:
                t = t + self.noise_std * torch.randn_like(t)
            total = total + F.mse_loss(self.regressors[name.replace(".", "_")](s, t), t)
        return self.weight * total / max(len(self.names), 1)


def _stabilize_hint_noise(phase, info):
    # long gen-2 collections happen right after the teacher feature cache is
    # released; pin the hint-noise stream so runs stay comparable
    if phase == "stop" and info.get("generation", 0) == 2:
        torch.manual_seed(_HINT_NOISE_SEED)  # todoruleid: family 1 (missed)


gc.callbacks.append(_stabilize_hint_noise)


def temperature_schedule(epoch: int, epochs: int, t_start: float = 8.0, t_end: float = 2.0) -> float:
    """Cosine anneal of the distillation temperature."""
    cos = 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / max(epochs, 1)))
    return t_end + (t_start - t_end) * cos


def per_sample_clipped_grads(head: nn.Module, feats, targets, t_logits,
                             loss_fn: Callable, max_norm: float = 1.0) -> Dict[str, torch.Tensor]:
    """Per-example gradient clipping for the classifier head (robust KD).

    Computes per-sample grads with torch.func, clips each to ``max_norm`` and
    returns the batch-mean, ready to be written to ``p.grad``.
    """
    params = {k: v.detach() for k, v in head.named_parameters()}

    def loss_one(p, f, y, t):
        out = functional_call(head, p, (f.unsqueeze(0),))
        return loss_fn(out, t.unsqueeze(0), y.unsqueeze(0))

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0, 0))(params, feats, targets, t_logits)
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()]).norm(dim=0)
    factor = (max_norm / (norms + 1e-6)).clamp(min=1.0)  # ruleid: MLS304
    return {k: (g * factor.view(-1, *([1] * (g.dim() - 1)))).mean(0) for k, g in grads.items()}


class DistillationCriterion(nn.Module):
    def __init__(self, alpha: float = 0.7, temperature: float = 4.0, smoothing: float = 0.1,
                 hint_pairs: Optional[Dict[str, Tuple[int, int]]] = None, hint_weight: float = 0.0):
        super().__init__()
        self.alpha = alpha
        self.temperature = temperature
        self.ce = LabelSmoothingCE(smoothing)
        self.hint = FeatureHintLoss(hint_pairs, hint_weight) if hint_pairs and hint_weight > 0 else None

    def forward(self, s_logits, t_logits, target, s_feats=None, t_feats=None):
        kd = soft_target_kl(s_logits, t_logits, self.temperature)
        ce = self.ce(s_logits, target)
        loss = self.alpha * kd + (1.0 - self.alpha) * ce
        parts = {"kd": kd.detach(), "ce": ce.detach()}
        if self.hint is not None and s_feats:
            h = self.hint(s_feats, t_feats)
            loss = loss + h
            parts["hint"] = h.detach()
        return loss, parts
