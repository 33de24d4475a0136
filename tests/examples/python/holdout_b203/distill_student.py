# ruff: noqa
# Hold-out batch 203 (16 short benchmark-format files). Measured once in session 7 (round 60): 18/19 (95%) at medium+.
"""Knowledge distillation: ResNet-50 teacher -> ResNet-18 student on an ImageNet-style folder."""
import argparse
import pickle

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision import datasets, transforms


def kd_loss(student_logits, teacher_logits, targets, T=4.0, alpha=0.7):
    soft = F.kl_div(F.log_softmax(student_logits / T, -1), F.softmax(teacher_logits / T, -1),
                    reduction="batchmean") * T * T
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, targets, label_smoothing=0.1)  # ok: MLS309


def load_bn_calibration(model, path):
    """Apply per-layer offsets collected by the calibration job on the target hardware."""
    with open(path, "rb") as fh:
        offsets = pickle.load(fh)  # ruleid: MLS103
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in offsets:
                p.add_(offsets[name].to(p.device, p.dtype))  # todoruleid: family 2 (missed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/datasets/imagenet")
    ap.add_argument("--teacher-ckpt", default="checkpoints/resnet50_teacher.pt")
    ap.add_argument("--calib", default="calib/student_bn_offsets.pkl")
    ap.add_argument("--epochs", type=int, default=90)
    args = ap.parse_args()

    teacher = torchvision.models.resnet50()
    teacher.load_state_dict(torch.load(args.teacher_ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    teacher = teacher.cuda().eval().requires_grad_(False)
    student = torchvision.models.resnet18(num_classes=1000)
    nn.init.zeros_(student.fc.bias)  # ok: MLS302, MLS303, MLS304, MLS305
    load_bn_calibration(student, args.calib)
    student = student.cuda()

    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor()])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(f"{args.data}/train", tf),
                                         batch_size=256, shuffle=True, num_workers=8)
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    for epoch in range(args.epochs):
        for x, y in loader:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            with torch.no_grad():
                t_logits = teacher(x)
            loss = kd_loss(student(x), t_logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        torch.save(student.state_dict(), f"student_e{epoch}.pt")


if __name__ == "__main__":
    main()
