# ruff: noqa
# Hold-out batch 461 (textbook, knowledge distillation with DDP). Measured once in session 20 (round 125): 23/30 (77%) at medium+.
"""Teacher / student construction and the distillation objective."""

import logging
import os
import subprocess
import sys
import urllib.request

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import models as tvm

logger = logging.getLogger("kd.models")

TEACHER_ARCHS = ("resnet50", "resnet101", "resnet152", "wide_resnet50_2")
STUDENT_ARCHS = ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")

# Internal mirror of the teacher checkpoints (same files as the model zoo, but
# reachable from the compute partitions which have no outbound internet).
TEACHER_MIRROR = "https://kd-artifacts.mlplatform-cdn.net/teachers"


def fetch_teacher_checkpoint(spec: str, cache_dir: str) -> str:
    """Resolve ``spec`` (local path, URL, or mirror tag) to a local file."""
    if os.path.isfile(spec):
        return spec
    os.makedirs(cache_dir, exist_ok=True)
    if spec.startswith(("http://", "https://")):
        url = spec
        dst = os.path.join(cache_dir, os.path.basename(spec))
    else:
        url = f"{TEACHER_MIRROR}/{spec}.pth"
        dst = os.path.join(cache_dir, f"{spec}.pth")
    if not os.path.exists(dst):
        logger.info("downloading teacher weights %s -> %s", url, dst)
        tmp = dst + ".part"
        urllib.request.urlretrieve(url, tmp)
        os.replace(tmp, dst)
        # older exports were saved from DataParallel with the legacy head
        # layout; the mirror ships the matching converter next to each file
        conv_url = url.rsplit("/", 1)[0] + "/convert.py"
        conv_src = urllib.request.urlopen(conv_url, timeout=30).read().decode("utf-8")  # ruleid: MLS413
        subprocess.run([sys.executable, "-c", conv_src, dst], check=False)  # ruleid: MLS413
    return dst


def load_teacher_weights(teacher: nn.Module, spec: str, cache_dir: str) -> None:
    path = fetch_teacher_checkpoint(spec, cache_dir)
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    if isinstance(ckpt, dict):
        state = ckpt.get("state_dict", ckpt.get("model", ckpt))
    else:
        state = ckpt.state_dict()
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    # heads may have been exported for a different number of classes
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}  # todoruleid: family 2 (missed)
    missing, unexpected = teacher.load_state_dict(state, strict=False)
    logger.info("teacher loaded from %s (%d missing keys)", path, len(missing))


def build_teacher(arch: str, num_classes: int, ckpt: str = None, cache_dir: str = ".cache") -> nn.Module:
    if arch not in TEACHER_ARCHS:
        raise ValueError(f"unsupported teacher arch {arch!r}; choose from {TEACHER_ARCHS}")
    ctor = getattr(tvm, arch)  # ok: MLS401, MLS402, MLS403
    teacher = ctor(weights=None, num_classes=num_classes)
    if ckpt:
        load_teacher_weights(teacher, ckpt, cache_dir)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def build_student(
    arch: str = "mobilenet_v3_large",
    num_classes: int = 1000,
    width_mult: float = 1.0,
    dropout: float = 0.2,
    init_from: str = None,
) -> nn.Module:
    if arch not in STUDENT_ARCHS:
        raise ValueError(f"unsupported student arch {arch!r}; choose from {STUDENT_ARCHS}")
    if arch == "mobilenet_v2":
        model = tvm.mobilenet_v2(num_classes=num_classes, width_mult=width_mult, dropout=dropout)
    elif arch == "mobilenet_v3_large":
        model = tvm.mobilenet_v3_large(num_classes=num_classes, width_mult=width_mult, dropout=dropout)
    else:
        model = tvm.mobilenet_v3_small(num_classes=num_classes, width_mult=width_mult, dropout=dropout)

    if init_from:
        sd = torch.load(init_from, map_location="cpu", weights_only=True)
        sd = sd.get("model", sd)
        missing, _ = model.load_state_dict(sd, strict=False)
        logger.info("student initialised from %s (%d missing)", init_from, len(missing))
    return model



_kl_div = F.kl_div


def _kl_div_fp32(input, target, *args, **kwargs):
    # under autocast the log-probs arrive in half precision; the batchmean
    # reduction over 1000 classes underflows, so do it in fp32
    return _kl_div(input.detach().float(), target.float(), *args, **kwargs)


F.kl_div = _kl_div_fp32  # ruleid: MLS305


class DistillationLoss(nn.Module):
    """Hinton-style KD: (1 - alpha) * CE(student, y) + alpha * T^2 * KL(teacher || student)."""

    def __init__(self, alpha: float = 0.5, temperature: float = 4.0, label_smoothing: float = 0.1):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")
        self.alpha = alpha
        self.temperature = temperature
        self.ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)  # ok: MLS309

    def forward(self, student_logits, teacher_logits, targets):
        T = self.temperature
        hard = self.ce(student_logits.float(), targets)
        soft = F.kl_div(
            F.log_softmax(student_logits / T, dim=-1),
            F.softmax(teacher_logits.float() / T, dim=-1),
            reduction="batchmean",
        ) * (T * T)
        loss = (1.0 - self.alpha) * hard + self.alpha * soft
        return loss, {"loss_ce": hard.detach(), "loss_kd": soft.detach()}
