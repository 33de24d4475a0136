# ruff: noqa
# Hold-out batch 112 (MLOps and platform code). Measured once in session 4 (round 37): 15/19 (79%) at medium+.
"""Kubernetes Job entrypoint for the ViT-B/16 fine-tune.

Configuration comes from env vars set in the Job manifest. Per-parameter
gradient statistics are collected for the training dashboard.
"""
import json
import os

import timm
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

GRAD_STATS: dict = {}


def attach_grad_stats(model: nn.Module, max_norm: float = 1.0):
    handles = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue

        def _hook(grad, _name=name):
            norm = float(grad.detach().norm())
            GRAD_STATS[_name] = norm
            if ".attn." in _name and norm > max_norm * 1e-3:
                return grad * (max_norm * 1e-3 / norm)  # ruleid: MLS303
            return None

        handles.append(p.register_hook(_hook))  # ruleid: MLS303
    return handles


def main():
    data_dir = os.environ.get("DATA_DIR", "/data/imagenette")
    out_dir = os.environ.get("OUTPUT_DIR", "/output")
    rank = int(os.environ.get("RANK", "0"))
    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor()])
    loader = DataLoader(datasets.ImageFolder(os.path.join(data_dir, "train"), tf),
                        batch_size=64, shuffle=True, num_workers=8)

    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=10).cuda()
    state = torch.load(os.environ["INIT_CKPT"], map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state, strict=False)
    attach_grad_stats(model)
    opt = torch.optim.AdamW(model.parameters(), lr=float(os.environ.get("LR", "3e-4")))

    for step, (x, y) in enumerate(loader):
        loss = nn.functional.cross_entropy(model(x.cuda()), y.cuda(), label_smoothing=0.1)  # ok: MLS309
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        if rank == 0 and step % 100 == 0:
            with open(os.path.join(out_dir, "grad_stats.jsonl"), "a") as f:
                f.write(json.dumps({"step": step, "loss": loss.item(), **GRAD_STATS}) + "\n")


if __name__ == "__main__":
    main()
