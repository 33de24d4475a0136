# ruff: noqa
# Hold-out batch 315 (16 short benchmark-format files). Measured once in session 10 (round 88): 14/16 (88%) at medium+.
"""Shelf-product detection (SKU-110K style) with torchvision Faster R-CNN and mixed precision."""
import os
import random
import signal
import sys

import torch
import torchvision
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.transforms import functional as TF

from shelf_data import ShelfDataset, collate_detection

STATE = {"step": 0}


def hflip(img, target):
    if random.random() < 0.5:
        img = TF.hflip(img)  # ok: MLS309
        w = img.shape[-1]
        target["boxes"][:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    return img, target


def build_model(num_classes=2, init="weights/frcnn_r50_coco.pt"):
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    in_f = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_f, num_classes)
    return model


def main(epochs=12, out="ckpt/shelf_frcnn.pt"):
    model = build_model().cuda()
    dl = torch.utils.data.DataLoader(ShelfDataset("data/sku110k", split="train", transform=hflip),
                                     batch_size=4, shuffle=True, num_workers=6, collate_fn=collate_detection)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                          weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[8, 11], gamma=0.1)
    scaler = torch.cuda.amp.GradScaler()

    def save_and_exit(signum, frame):
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": STATE["step"]}, out)
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, save_and_exit)  # ok: MLS307

    for epoch in range(epochs):
        for imgs, targets in dl:
            imgs = [i.cuda() for i in imgs]
            targets = [{k: v.cuda() for k, v in t.items()} for t in targets]
            with torch.autocast("cuda"):
                loss = sum(model(imgs, targets).values())
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.update()
            STATE["step"] += 1
        sched.step()
        os.makedirs(os.path.dirname(out), exist_ok=True)
        torch.save({"model": model.state_dict(), "epoch": epoch}, out)


if __name__ == "__main__":
    main()
