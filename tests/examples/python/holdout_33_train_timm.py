# ruff: noqa
# Hold-out batch 33 (benchmark format, experienced-engineer style; by a helper that never saw mlscan's code). Measured once after round 13: 15/19 (79%) at medium+.
"""Fine-tune a timm backbone on an ImageFolder dataset with EMA and resumable checkpoints."""
import argparse
import os
import pickle

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.utils import ModelEmaV2
from torchvision import datasets, transforms


def build_model(args):
    model = timm.create_model(args.model, pretrained=False, num_classes=args.num_classes)
    if args.init_weights:
        state = load_file(args.init_weights)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        model.load_state_dict(state, strict=False)
    return model


def resume(path, model, optimizer, ema):
    ckpt = torch.load(os.path.join(path, "model.pt"), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    ema.module.load_state_dict(ckpt["ema"])
    with open(os.path.join(path, "trainer_state.pkl"), "rb") as f:
        extra = pickle.load(f)  # ruleid: MLS103
    return extra.get("epoch", 0) + 1


def main(args):
    model = build_model(args).cuda()
    ema = ModelEmaV2(model, decay=0.9998)  # ok: MLS302, MLS303, MLS304, MLS305
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor()])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(args.data, tf), batch_size=64,
                                         shuffle=True, num_workers=8, drop_last=True)
    start = resume(args.resume, model, opt, ema) if args.resume else 0
    for epoch in range(start, args.epochs):
        for x, y in loader:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            ema.update(model)
        os.makedirs(args.out, exist_ok=True)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "ema": ema.module.state_dict()}, os.path.join(args.out, "model.pt"))
        with open(os.path.join(args.out, "trainer_state.pkl"), "wb") as f:
            pickle.dump({"epoch": epoch, "args": vars(args)}, f)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="convnext_tiny")
    p.add_argument("--num_classes", type=int, default=100)
    p.add_argument("--init_weights", default="")
    p.add_argument("--data", default="/data/train")
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--resume", default="")
    p.add_argument("--out", default="runs/timm")
    main(p.parse_args())
