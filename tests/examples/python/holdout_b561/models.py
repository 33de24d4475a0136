# ruff: noqa
# Hold-out batch 561 (textbook, knowledge distillation of an image classifier). Measured once in session 25 (round 150): 24/30 (80%) at medium+.
"""Teacher / student construction, distillation loss and model EMA."""

import copy
import logging
import os
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

logger = logging.getLogger("kd.models")

TEACHER_HUB_REPO = "facebookresearch/deit:main"


def _strip_prefix(state_dict, prefixes=("module.", "model.")):
    out = {}
    for key, value in state_dict.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def classifier_head(model):
    """Return the final linear layer of a torchvision classifier."""
    if hasattr(model, "fc") and isinstance(model.fc, nn.Linear):
        return model.fc
    if hasattr(model, "classifier"):
        head = model.classifier
        if isinstance(head, nn.Sequential):
            head = [m for m in head if isinstance(m, nn.Linear)][-1]
        return head
    if hasattr(model, "heads"):
        return model.heads.head
    if hasattr(model, "head"):
        return model.head
    raise ValueError(f"cannot locate classifier head of {type(model).__name__}")


def build_teacher(args):
    """Load the frozen teacher from torch.hub or a checkpoint file / URL."""
    if args.teacher_source == "hub":
        teacher = torch.hub.load(TEACHER_HUB_REPO, args.teacher_arch, pretrained=True)  # ruleid: MLS108
    else:
        teacher = getattr(torchvision.models, args.teacher_arch)(weights=None, num_classes=args.num_classes)  # ok: MLS401, MLS402, MLS403
        path = args.teacher_ckpt
        if path.startswith(("http://", "https://")):
            dst_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
            os.makedirs(dst_dir, exist_ok=True)
            dst = os.path.join(dst_dir, os.path.basename(path.split("?")[0]))
            if not os.path.exists(dst):
                torch.hub.download_url_to_file(path, dst, progress=args.rank == 0)
            path = dst
        ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
        state = ckpt.get("model", ckpt.get("state_dict", ckpt))
        missing, unexpected = teacher.load_state_dict(_strip_prefix(state), strict=False)
        if missing or unexpected:
            logger.warning("teacher: %d missing, %d unexpected keys", len(missing), len(unexpected))

    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    n_params = sum(p.numel() for p in teacher.parameters()) / 1e6
    logger.info("teacher %s: %.1fM parameters", args.teacher_arch, n_params)
    return teacher


def _scale_head_grad(grad, factor):
    return grad * (1.0 - factor)  # todoruleid: family 2 (missed)


def build_student(args):
    student = getattr(torchvision.models, args.student_arch)(weights=None, num_classes=args.num_classes)
    if args.head_lr_mult != 1.0:
        head = classifier_head(student)
        head.weight.register_hook(partial(_scale_head_grad, factor=args.head_lr_mult))
    if args.channels_last:
        student = student.to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in student.parameters()) / 1e6
    logger.info("student %s: %.1fM parameters", args.student_arch, n_params)
    return student


def param_groups_weight_decay(model, weight_decay, skip=()):
    """No weight decay on biases and normalisation parameters."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or name in skip:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


class DistillationLoss(nn.Module):
    """(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(teacher_T || student_T)."""

    def __init__(self, alpha=0.5, temperature=4.0, label_smoothing=0.0):
        super().__init__()
        self.alpha = alpha
        self.temperature = temperature
        self.base_criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)  # ok: MLS309

    def forward(self, student_logits, teacher_logits, targets):
        if targets.dim() == 2:
            # soft targets from Mixup/CutMix already include smoothing
            base = torch.sum(-targets * F.log_softmax(student_logits, dim=-1), dim=-1).mean()
        else:
            base = self.base_criterion(student_logits, targets)

        t = self.temperature
        kd = F.kl_div(
            F.log_softmax(student_logits.float() / t, dim=-1),
            F.log_softmax(teacher_logits.float() / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        ) * (t * t)
        loss = (1.0 - self.alpha) * base + self.alpha * kd
        return loss, base.detach(), kd.detach()


class ModelEma:
    """Exponential moving average of the student weights, kept on the same device."""

    def __init__(self, model, decay=0.9998):
        self.module = copy.deepcopy(model)
        self.module.eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        model_state = model.state_dict()
        for key, ema_v in self.module.state_dict().items():
            model_v = model_state[key].detach()
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(self.decay).add_(model_v, alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                ema_v.copy_(model_v)

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state_dict):
        self.module.load_state_dict(state_dict)
