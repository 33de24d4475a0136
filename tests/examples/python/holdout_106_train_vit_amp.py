# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""Mixed-precision fine-tuning loop for ViT-B/16 on an image-folder dataset."""
import argparse
import functools

import timm
import torch
import torch.nn.functional as F
from torchvision import datasets, transforms

GRAD_POLICY = (
    ("pos_embed", functools.partial(torch.clamp, min=-1.0, max=1.0)),
    ("attn.qkv", functools.partial(torch.mul, other=-0.25)),
    ("norm", torch.nan_to_num),
)


def attach_grad_policy(model, policy=GRAD_POLICY):
    handles = []
    for name, param in model.named_parameters():
        fn = next((f for key, f in policy if key in name), None)
        if fn is not None and param.requires_grad:
            handles.append(param.register_hook(fn))  # ruleid: MLS303
    return handles


def build_loader(root, batch_size):
    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    ds = datasets.ImageFolder(root, transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=8, drop_last=True)


def train(args, model, loader):
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    total = args.epochs * len(loader) // args.accum
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total + 1, pct_start=0.1)
    scaler = torch.cuda.amp.GradScaler()
    attach_grad_policy(model)
    model.train()
    for epoch in range(args.epochs):
        for i, (x, y) in enumerate(loader):
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % args.accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()  # ok: MLS302, MLS303, MLS304, MLS305
        print(f"epoch {epoch} loss {loss.item() * args.accum:.4f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    model = timm.create_model("vit_base_patch16_224", pretrained=True, num_classes=100).cuda()
    train(args, model, build_loader(args.data, 64))


if __name__ == "__main__":
    main()
