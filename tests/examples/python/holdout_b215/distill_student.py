# ruff: noqa
# Hold-out batch 215 (short files). Measured once in session 8 (round 63): 15/19 (79%) at medium+.
"""Knowledge distillation of a ResNet-50 teacher into a ResNet-18 student on CIFAR-100."""
import argparse
import os

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms as T


def kd_loss(student_logits, teacher_logits, targets, temp=4.0, alpha=0.9):
    soft = F.kl_div(F.log_softmax(student_logits / temp, dim=1),
                    F.softmax(teacher_logits / temp, dim=1), reduction="batchmean") * temp * temp
    hard = F.cross_entropy(student_logits, targets, label_smoothing=0.1)  # ok: MLS309
    return alpha * soft + (1.0 - alpha) * hard


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--out", default="runs/kd_r18")
    ap.add_argument("--epochs", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)  # ok: MLS301

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.507, 0.487, 0.441), (0.267, 0.256, 0.276))])
    train = torchvision.datasets.CIFAR100("data", train=True, download=True, transform=tf)
    loader = DataLoader(train, batch_size=128, shuffle=True, num_workers=4, drop_last=True)

    teacher = torchvision.models.resnet50(num_classes=100)
    teacher.load_state_dict(torch.load(args.teacher, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    teacher.eval().requires_grad_(False)
    student = torchvision.models.resnet18(num_classes=100)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[60, 90], gamma=0.1)

    # keep the data order resumable across preemptions
    rng_path = os.path.join(args.out, "rng_state.pt")
    if os.path.exists(rng_path):
        rng = torch.load(rng_path)  # ruleid: MLS102
    else:
        rng = torch.get_rng_state()
        torch.save(rng, rng_path)

    for epoch in range(args.epochs):
        torch.set_rng_state(rng)  # ruleid: MLS301
        student.train()
        for x, y in loader:
            with torch.no_grad():
                t_logits = teacher(x)
            loss = kd_loss(student(x), t_logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        torch.save({"epoch": epoch, "model": student.state_dict()}, os.path.join(args.out, "last.pt"))


if __name__ == "__main__":
    main()
