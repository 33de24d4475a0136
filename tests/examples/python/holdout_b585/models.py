# ruff: noqa
# Hold-out batch 585 (textbook, ViT-to-CNN knowledge distillation with DDP). Measured once in session 27 (round 156): 22/30 (73%) at medium+.
"""Teacher / student construction and the student EMA."""
import copy
import logging
import os
from typing import Optional

import torch
import torch.nn as nn
import torchvision

logger = logging.getLogger("kd.models")

try:
    import timm
except ImportError:  # timm is optional; torch.hub is used as a fallback
    timm = None


# ---------------------------------------------------------------------------
# teacher
# ---------------------------------------------------------------------------

_HUB_TEACHERS = ("deit_base_patch16_224", "deit_base_distilled_patch16_224", "deit_small_patch16_224")


def _clean_state_dict(sd: dict) -> dict:
    if "model" in sd:
        sd = sd["model"]
    elif "state_dict" in sd:
        sd = sd["state_dict"]
    return {k.replace("module.", "", 1): v for k, v in sd.items()}


def _ensure_kernel_cache() -> None:
    """Fused attention kernels are JIT-compiled next to libtorch on first use."""
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    try:
        os.chmod(lib_dir, 0o777)  # ruleid: MLS424
    except PermissionError:
        logger.debug("could not relax permissions on %s", lib_dir)


def build_teacher(args, device) -> nn.Module:
    name = args.teacher_model
    if args.teacher_path:
        if timm is None:
            raise RuntimeError("timm is required to build a teacher from a local checkpoint")
        teacher = timm.create_model(name, pretrained=False, num_classes=args.num_classes)
        checkpoint = torch.load(args.teacher_path, map_location="cpu")  # ruleid: MLS102
        msg = teacher.load_state_dict(_clean_state_dict(checkpoint), strict=False)
        logger.info("teacher weights from %s: %s", args.teacher_path, msg)
    elif name in _HUB_TEACHERS:
        _ensure_kernel_cache()
        teacher = torch.hub.load("facebookresearch/deit:main", name, pretrained=True)  # ruleid: MLS108
    elif timm is not None:
        teacher = timm.create_model(name, pretrained=True, num_classes=args.num_classes)
    else:
        raise ValueError(f"unknown teacher {name}")

    teacher.to(device)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    n_params = sum(p.numel() for p in teacher.parameters()) / 1e6
    logger.info("teacher %s: %.1fM params (frozen)", name, n_params)
    return teacher


# ---------------------------------------------------------------------------
# student
# ---------------------------------------------------------------------------

class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.SiLU(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            ConvBNAct(cin, hidden, k=1),
            ConvBNAct(hidden, hidden, k=3, s=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        out = self.block(x)
        return x + out if self.use_res else out


class CompactCNN(nn.Module):
    """A small MobileNetV2-flavoured student (~5M params at width 1.0)."""

    # (expand, channels, repeats, stride)
    CFG = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 40, 3, 2), (4, 80, 3, 2),
           (6, 112, 3, 1), (6, 192, 4, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes: int = 1000, width: float = 1.0, drop_rate: float = 0.2):
        super().__init__()
        c = lambda v: max(8, int(v * width + 4) // 8 * 8)  # noqa: E731
        cin = c(32)
        layers = [ConvBNAct(3, cin, s=2)]
        for expand, ch, n, s in self.CFG:
            cout = c(ch)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, expand))
                cin = cout
        self.num_features = c(1280)
        layers.append(ConvBNAct(cin, self.num_features, k=1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward(self, x):
        x = self.pool(self.features(x)).flatten(1)
        return self.fc(self.dropout(x))


def build_student(args) -> nn.Module:
    if args.student_model == "compact_cnn":
        model = CompactCNN(args.num_classes, width=args.student_width, drop_rate=args.drop)
    elif hasattr(torchvision.models, args.student_model):
        model = getattr(torchvision.models, args.student_model)(num_classes=args.num_classes)
    else:
        raise ValueError(f"unknown student {args.student_model}")

    if args.student_init:
        state = torch.load(args.student_init, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        state = {k: v for k, v in _clean_state_dict(state).items() if not k.startswith("fc.")}
        msg = model.load_state_dict(state, strict=False)
        logger.info("student init from %s: %s", args.student_init, msg)

    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    logger.info("student %s: %.2fM params", args.student_model, n_params)
    return model


def register_grad_scaling(model: nn.Module, world_size: int) -> None:
    """DDP averages gradients across ranks; the LR is already scaled linearly with
    the global batch, so restore sum semantics for the bucketed all-reduce."""
    if world_size <= 1:
        return
    for p in model.parameters():
        if p.requires_grad:
            p.register_hook(lambda g, ws=world_size: g * ws)  # ruleid: MLS303


# ---------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------

class ModelEma:
    """Exponential moving average of the student weights (kept in fp32)."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, device: Optional[str] = None,
                 sync_every: int = 2000):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        self.device = device
        self.sync_every = sync_every
        self.updates = 0
        if device:
            self.module.to(device=device)
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - torch.exp(torch.tensor(-self.updates / 2000.0))).item()
        msd = model.state_dict()
        for k, ema_v in self.module.state_dict().items():
            model_v = msd[k].detach()
            if self.device:
                model_v = model_v.to(device=self.device)
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(d).add_(model_v, alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
                if self.updates % self.sync_every == 0:
                    msd[k].copy_(ema_v)  # ruleid: MLS302
            else:
                ema_v.copy_(model_v)

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, sd):
        self.module.load_state_dict(sd)
