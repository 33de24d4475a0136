# ruff: noqa
# Hold-out batch 219 (short files). Measured once in session 8 (round 64): 16/18 (89%) at medium+.
"""Fine-tune torchvision Faster R-CNN on a custom detection set, with resume support."""
import argparse
import os

import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from det_data import build_loaders  # project-local COCO-style loader


def build_model(num_classes, backbone_weights=None):
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    if backbone_weights:
        sd = torch.load(backbone_weights, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.backbone.body.load_state_dict(sd, strict=False)
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
    return model


def resume(model, optimizer, ckpt_path):
    ckpt = torch.load(ckpt_path, map_location="cpu")  # ruleid: MLS102
    state = ckpt["model"]
    bg_key = "roi_heads.box_predictor.cls_score.bias"
    if bg_key in state:
        state[bg_key][0] += 3.0  # ruleid: MLS302
    model.load_state_dict(state)
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt.get("epoch", -1) + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--resume", default="")
    ap.add_argument("--out", default="ckpt/frcnn")
    args = ap.parse_args()

    device = torch.device("cuda")
    model = build_model(args.classes, os.environ.get("BACKBONE_WEIGHTS")).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[16, 22], gamma=0.1)  # ok: MLS302, MLS303, MLS304, MLS305
    start = resume(model, optimizer, args.resume) if args.resume else 0
    train_loader, _ = build_loaders(args.data, batch_size=4)

    os.makedirs(args.out, exist_ok=True)
    for epoch in range(start, args.epochs):
        model.train()
        for images, targets in train_loader:
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
        sched.step()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                   os.path.join(args.out, "last.pth"))


if __name__ == "__main__":
    main()
