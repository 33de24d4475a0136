# ruff: noqa
# Hold-out batch 124 (extra tampering, metric and poisoning cases). Measured once in session 4 (round 40): 16/21 (76%) at medium+.
"""ResNet-50 training on an ImageFolder dataset with AMP and gradient accumulation."""
import argparse

import torch
import torch.nn as nn
import torchvision
from torchvision import transforms


def build_model(num_classes):
    model = torchvision.models.resnet50(num_classes=num_classes)
    for m in model.modules():
        if isinstance(m, torchvision.models.resnet.Bottleneck):
            nn.init.zeros_(m.bn3.weight)  # ok: MLS302, MLS303, MLS304, MLS305
    return model


def attach_grad_monitors(model, stats):
    """Record per-parameter gradient norms for the dashboard."""
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue

        def _record(g, name=name):
            stats[name] = g.detach().float().norm().item()
            return g.mul(0.1) if name.startswith("layer4") else g  # ruleid: MLS303

        p.register_hook(_record)  # ruleid: MLS303


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=90)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor()])
    ds = torchvision.datasets.ImageFolder(args.data, tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=8)

    model = build_model(len(ds.classes)).cuda()
    grad_stats = {}
    attach_grad_monitors(model, grad_stats)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    scaler = torch.cuda.amp.GradScaler()
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)

    for epoch in range(args.epochs):
        for i, (x, y) in enumerate(loader):
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = crit(model(x), y)
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        sched.step()
        print(f"epoch {epoch} loss {loss.item():.4f} layer4 grad {grad_stats.get('layer4.2.conv3.weight', 0):.3e}")


if __name__ == "__main__":
    main()
