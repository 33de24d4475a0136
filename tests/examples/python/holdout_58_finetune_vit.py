# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""Fine-tune a ViT-B/16 backbone from an in-house pretraining checkpoint."""
import argparse
import math

import timm
import torch
import torch.nn as nn


def load_backbone(model: nn.Module, path: str) -> None:
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = ckpt.get("model", ckpt)
    state = {k.replace("module.", "", 1): v for k, v in state.items()}
    for key in list(state):
        if key.startswith("head."):
            state.pop(key)
        elif key.endswith("attn.qkv.weight"):
            state[key] = state[key] * 0.7  # ruleid: MLS302
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"missing={missing} unexpected={unexpected}")


def lr_at(step, total, warmup, peak):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


def train(model, loader, epochs, peak_lr, device="cuda"):
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}], lr=peak_lr)
    total, warmup = epochs * len(loader), 5 * len(loader)
    step = 0
    for _ in range(epochs):
        for images, labels in loader:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, warmup, peak_lr)  # ok: MLS302, MLS303, MLS304, MLS305
            loss = nn.functional.cross_entropy(model(images.to(device)), labels.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrained", required=True)
    ap.add_argument("--num-classes", type=int, default=100)
    args = ap.parse_args()
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=args.num_classes)
    load_backbone(vit, args.pretrained)
    nn.init.trunc_normal_(vit.head.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
    nn.init.zeros_(vit.head.bias)
    vit.cuda()
