# ruff: noqa
# Hold-out batch 120 (generative, self-supervised, compression). Measured once in session 4 (round 39): 16/18 (89%) at medium+, three benign lines flagged.
"""Logit + feature distillation from a ResNet-50 teacher into a ResNet-18 student."""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def kd_loss(student_logits, teacher_logits, labels, T=4.0, alpha=0.9):
    soft = F.kl_div(F.log_softmax(student_logits / T, dim=1),
                    F.softmax(teacher_logits / T, dim=1), reduction="batchmean") * T * T
    hard = F.cross_entropy(student_logits, labels, label_smoothing=0.1)  # ok: MLS309
    return alpha * soft + (1.0 - alpha) * hard


class FeatureAdapter(nn.Module):
    """1x1 conv mapping student layer3 features to teacher width."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.proj = nn.Conv2d(c_in, c_out, 1, bias=False)
        nn.init.kaiming_normal_(self.proj.weight, mode="fan_out")  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        return self.proj(x)


def _balance_feature_grads(module, grad_input, grad_output):
    # keep the hint loss from dominating the early stages
    return tuple(None if g is None else g * 1e-3 for g in grad_input)  # ruleid: MLS303


def train(args):
    device = torch.device("cuda")
    teacher = torchvision.models.resnet50(num_classes=args.num_classes)
    teacher.load_state_dict(torch.load(args.teacher_ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    teacher.eval().to(device)
    student = torchvision.models.resnet18(num_classes=args.num_classes).to(device)
    adapter = FeatureAdapter(256, 1024).to(device)
    feats = {}
    student.layer3.register_forward_hook(lambda m, i, o: feats.__setitem__("s", o))
    teacher.layer3.register_forward_hook(lambda m, i, o: feats.__setitem__("t", o))
    student.layer3.register_full_backward_hook(_balance_feature_grads)  # ruleid: MLS303

    params = list(student.parameters()) + list(adapter.parameters())
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(args.epochs):
        for x, y in args.loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
                t_logits = teacher(x)
            with torch.autocast("cuda", dtype=torch.float16):
                s_logits = student(x)
                hint = F.mse_loss(adapter(feats["s"]), feats["t"].detach())
                loss = kd_loss(s_logits, t_logits, y) + args.hint_weight * hint
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, max_norm=5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        sched.step()
    return student
