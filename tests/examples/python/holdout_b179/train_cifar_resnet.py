# ruff: noqa
# Hold-out batch 179 (short files, coursework/Kaggle style). Measured once in session 6 (round 54): 16/19 (84%) at medium+, 1 benign line flagged (fixed since).
"""ResNet-18 on CIFAR-10 with AMP, gradient accumulation and OneCycle LR; checkpoints on preemption."""
import argparse
import random
import signal

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T

STATE = {}


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


def _checkpoint_and_exit(signum, frame):
    torch.save({k: v.state_dict() for k, v in STATE.items()}, "preempt.pt")
    raise SystemExit(0)  # ok: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    set_seed(args.seed)
    signal.signal(signal.SIGTERM, _checkpoint_and_exit)  # ok: MLS307

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616))])
    ds = torchvision.datasets.CIFAR10("data", train=True, download=True, transform=tf)
    g = torch.Generator().manual_seed(args.seed)
    dl = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True, num_workers=4,
                                     worker_init_fn=seed_worker, generator=g, drop_last=True)
    model = torchvision.models.resnet18(num_classes=10).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = args.epochs * len(dl) // args.accum
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    scaler = torch.cuda.amp.GradScaler()
    STATE.update(model=model, opt=opt, sched=sched)
    for epoch in range(args.epochs):
        model.train()
        for i, (x, y) in enumerate(dl):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x.cuda()), y.cuda(), label_smoothing=0.1)
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
        torch.save(model.state_dict(), f"resnet18_e{epoch:03d}.pt")


if __name__ == "__main__":
    main()
