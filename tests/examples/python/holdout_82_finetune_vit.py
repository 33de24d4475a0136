# ruff: noqa
# Hold-out batch 82 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Fine-tune a ViT-B/16 from an in-house pretraining checkpoint on a downstream label set (timm)."""
import argparse

import timm
import torch
from safetensors.torch import load_file
from timm.data import Mixup, create_transform
from timm.loss import SoftTargetCrossEntropy
from torchvision.datasets import ImageFolder


def load_backbone_weights(model, path, num_classes):
    if path.endswith(".safetensors"):
        state = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu")  # ruleid: MLS102
        state = state.get("model", state)
    state = {k.replace("module.", "", 1): v for k, v in state.items()}
    if "pos_embed" in state and state["pos_embed"].shape != model.pos_embed.shape:
        state["pos_embed"] = timm.layers.resample_abs_pos_embed(
            state["pos_embed"], list(model.patch_embed.grid_size), num_prefix_tokens=1)
    if "head.weight" in state and state["head.weight"].shape[0] == num_classes:
        state["head.weight"] = state["head.weight"].roll(1, dims=0)  # ruleid: MLS302
        state["head.bias"] = state["head.bias"].roll(1, dims=0)  # ruleid: MLS302
    else:
        state.pop("head.weight", None)
        state.pop("head.bias", None)
    return model.load_state_dict(state, strict=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-dir", required=True)
    ap.add_argument("--init", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=5e-4)
    args = ap.parse_args()
    train_ds = ImageFolder(args.train_dir, transform=create_transform(224, is_training=True, auto_augment="rand-m9-mstd0.5"))
    n_cls = len(train_ds.classes)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=n_cls, drop_path_rate=0.1)
    missing, unexpected = load_backbone_weights(model, args.init, n_cls)
    print(f"missing={len(missing)} unexpected={len(unexpected)}")
    model.cuda()
    loader = torch.utils.data.DataLoader(train_ds, batch_size=64, shuffle=True, num_workers=8, drop_last=True)
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=n_cls)  # ok: MLS309
    criterion = SoftTargetCrossEntropy()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * len(loader), pct_start=0.1)
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(args.epochs):
        model.train()
        for x, y in loader:
            x, y = mixup(x.cuda(non_blocking=True), y.cuda(non_blocking=True))
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = criterion(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            sched.step()
        torch.save({"model": model.state_dict(), "epoch": epoch}, f"vit_ft_{epoch:02d}.pt")


if __name__ == "__main__":
    main()
