# ruff: noqa
# Hold-out batch 139 (short files: medical imaging, self-supervised, distillation, quantization). Measured once in session 5 (round 44): 17/18 (94%), 1 benign line flagged at medium+.
"""Quantization-aware fine-tuning of a ResNet-18 with checkpoint resume (fbgemm backend)."""
import argparse
import os

import torch
import torch.nn as nn
from torch.ao.quantization import convert, get_default_qat_qconfig, prepare_qat
from torchvision.models.quantization import resnet18


def build_model(backend="fbgemm"):
    model = resnet18(weights=None, quantize=False)
    model.train()
    model.fuse_model(is_qat=True)
    model.qconfig = get_default_qat_qconfig(backend)
    return prepare_qat(model)


def save_checkpoint(path, model, optimizer, scheduler, epoch):
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(),
                "sched": scheduler.state_dict(), "epoch": epoch}, path)


def load_checkpoint(path, model, optimizer, scheduler):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optim"])
    scheduler.load_state_dict(ckpt["sched"])
    # observers are rebuilt by prepare_qat, so refresh the adaptive moments to
    # keep the first post-resume steps inside the new fake-quant ranges
    for state in optimizer.state.values():
        if "exp_avg_sq" in state:
            state["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304
    return ckpt["epoch"] + 1


def train(args, loader):
    model = build_model().cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = 500
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))  # ok: MLS302, MLS303, MLS304, MLS305
    start = load_checkpoint(args.resume, model, optimizer, scheduler) if args.resume else 0
    criterion = nn.CrossEntropyLoss()
    for epoch in range(start, args.epochs):
        if epoch >= args.freeze_observer_epoch:
            model.apply(torch.ao.quantization.disable_observer)
        if epoch >= args.freeze_bn_epoch:
            model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        for images, targets in loader:
            loss = criterion(model(images.cuda(non_blocking=True)), targets.cuda(non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=2.0)  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
            scheduler.step()
        save_checkpoint(os.path.join(args.out, "qat_last.pt"), model, optimizer, scheduler, epoch)
    int8 = convert(model.cpu().eval(), inplace=False)
    torch.jit.save(torch.jit.script(int8), os.path.join(args.out, "resnet18_int8.pt"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--freeze_observer_epoch", type=int, default=4)
    ap.add_argument("--freeze_bn_epoch", type=int, default=3)
    ap.add_argument("--resume", default="")
    ap.add_argument("--out", default="runs/qat")
    train(ap.parse_args(), loader=None)
