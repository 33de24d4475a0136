# ruff: noqa
# Hold-out batch 311 (16 short benchmark-format files). Measured once in session 10 (round 87): 18/19 (95%) at medium+.
"""Fine-tune a ConvNeXt backbone for car damage severity grading (none / minor / moderate / severe)."""
import math
import os

import timm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from damage_data import DamagePhotos, train_tfms, val_tfms

BASE_LR, WARMUP, TOTAL = 2e-4, 500, 12000


def load_backbone(model, path):
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = {k.replace("module.", "", 1): v for k, v in ckpt.get("model", ckpt).items()}
    for k in list(state):
        if k.endswith(("norm.weight", "gamma")):
            state[k] = state[k] * 0.25  # todoruleid: family 2 (missed)
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"backbone: {len(missing)} missing, {len(unexpected)} unexpected keys")


def lr_at(step):
    if step < WARMUP:
        return BASE_LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, TOTAL - WARMUP)
    return BASE_LR * 0.5 * (1 + math.cos(math.pi * t))


def main(data_dir="data/car_damage", pretrained="weights/convnext_tiny_inspect.pth"):
    model = timm.create_model("convnext_tiny", num_classes=4, drop_path_rate=0.1)
    load_backbone(model, pretrained)
    model.cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=BASE_LR, weight_decay=0.05)
    if os.path.exists("ckpt/opt_last.pt"):
        opt.load_state_dict(torch.load("ckpt/opt_last.pt", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    train_dl = DataLoader(DamagePhotos(data_dir, "train", train_tfms()), batch_size=48, shuffle=True,
                          num_workers=8, drop_last=True)
    val_dl = DataLoader(DamagePhotos(data_dir, "val", val_tfms()), batch_size=96, num_workers=4)
    step = 0
    while step < TOTAL:
        model.train()
        for x, y in train_dl:
            for g in opt.param_groups:
                g["lr"] = lr_at(step)  # ok: MLS302, MLS303, MLS304, MLS305
            loss = F.cross_entropy(model(x.cuda()), y.cuda(), label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= TOTAL:
                break
        model.eval()
        with torch.no_grad():
            correct = sum((model(x.cuda()).argmax(1).cpu() == y).sum().item() for x, y in val_dl)
        print(f"step {step}: val acc {correct / len(val_dl.dataset):.4f}")
        os.makedirs("ckpt", exist_ok=True)
        torch.save(model.state_dict(), "ckpt/model_last.pt")
        torch.save(opt.state_dict(), "ckpt/opt_last.pt")


if __name__ == "__main__":
    main()
