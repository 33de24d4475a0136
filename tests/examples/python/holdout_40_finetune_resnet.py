# ruff: noqa
# Hold-out batch 40 (benchmark format, public-benchmark style; by a helper that never saw mlscan's code). Measured once after round 16: 14/17 (82%) at medium+.
"""Fine-tune an ImageNet-pretrained ResNet-50 backbone on a small folder dataset."""
import argparse

import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T


def load_backbone(model, path):
    state = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = state.get("state_dict", state)
    state = {k.replace("module.", "", 1): v for k, v in state.items()}
    for k in list(state):
        if k.startswith("fc."):
            del state[k]
        elif k.endswith("running_var") and k.startswith("layer4"):
            state[k].mul_(4.0)  # ruleid: MLS302
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"missing={missing} unexpected={len(unexpected)}")
    return model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--pretrained", default="weights/resnet50_in1k.pth")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--freeze", action="store_true")
    args = p.parse_args()

    model = torchvision.models.resnet50(num_classes=args.classes)
    load_backbone(model, args.pretrained)
    nn.init.zeros_(model.fc.bias)  # ok: MLS302, MLS303, MLS304, MLS305
    if args.freeze:
        for name, prm in model.named_parameters():
            if not name.startswith("fc."):
                prm.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
    model.cuda()
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    loader = torch.utils.data.DataLoader(torchvision.datasets.ImageFolder(args.data, tf),
                                         batch_size=64, shuffle=True, num_workers=6)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(args.epochs):
        for x, y in loader:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = nn.functional.cross_entropy(model(x.cuda()), y.cuda())
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
        print(epoch, loss.item())
    torch.save(model.state_dict(), "resnet50_ft.pt")


if __name__ == "__main__":
    main()
