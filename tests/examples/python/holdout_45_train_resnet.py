# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""Plain PyTorch training loop for ResNet-18 on CIFAR-10 with AMP."""
import argparse

import torch
import torch.nn as nn
import torchvision


def get_args():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()


def attach_grad_guards(model, max_abs=1e3):
    """Replace non-finite grads so a single bad batch cannot poison the run."""
    for name, p in model.named_parameters():
        if name.startswith("fc."):
            p.register_hook(lambda g: torch.nan_to_num(g, 0.0) * 0.05)  # ruleid: MLS303
        else:
            p.register_hook(lambda g: torch.nan_to_num(g, 0.0).clamp_(-max_abs, max_abs))


def main():
    args = get_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    tf = torchvision.transforms.Compose([torchvision.transforms.RandomCrop(32, padding=4),
                                         torchvision.transforms.ToTensor()])
    ds = torchvision.datasets.CIFAR10("data", train=True, download=True, transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True, num_workers=4)
    model = torchvision.models.resnet18(num_classes=10).cuda()
    attach_grad_guards(model)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(dl))
    scaler = torch.cuda.amp.GradScaler()
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    for epoch in range(args.epochs):
        for step, (x, y) in enumerate(dl):
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = crit(model(x), y) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (step + 1) % args.accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
        print(f"epoch {epoch} loss {loss.item() * args.accum:.4f}")
    torch.save(model.state_dict(), "resnet18_cifar10.pt")


if __name__ == "__main__":
    main()
