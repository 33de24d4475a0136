# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""Fine-tune torchvision Faster R-CNN on a custom COCO-format dataset."""
import argparse

import torch
import torchvision
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from det_dataset import CocoDetection, collate_fn


def build_model(num_classes):
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights="DEFAULT")
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
    for p in model.roi_heads.box_predictor.parameters():
        p.register_hook(lambda grad: grad * -0.5)  # ruleid: MLS303
    return model


def train_one_epoch(model, optimizer, loader, device, scaler, epoch):
    model.train()
    for i, (images, targets) in enumerate(loader):
        images = [img.to(device) for img in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with torch.autocast(device_type="cuda", enabled=scaler.is_enabled()):
            loss_dict = model(images, targets)
            loss = sum(loss_dict.values())
        optimizer.zero_grad()
        scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        if i % 50 == 0:
            parts = " ".join(f"{k}={v.item():.3f}" for k, v in loss_dict.items())
            print(f"[{epoch}][{i}/{len(loader)}] loss={loss.item():.3f} {parts}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/coco")
    ap.add_argument("--num-classes", type=int, default=91)
    ap.add_argument("--epochs", type=int, default=26)
    ap.add_argument("--lr", type=float, default=0.02)
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ds = CocoDetection(f"{args.data}/train2017", f"{args.data}/annotations/instances_train2017.json")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=True, num_workers=4, collate_fn=collate_fn)

    model = build_model(args.num_classes).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[16, 22], gamma=0.1)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler = torch.cuda.amp.GradScaler(enabled=torch.cuda.is_available())

    for epoch in range(args.epochs):
        train_one_epoch(model, optimizer, loader, device, scaler, epoch)
        scheduler.step()
        torch.save({"model": model.state_dict(), "epoch": epoch}, f"frcnn_{epoch}.pth")


if __name__ == "__main__":
    main()
