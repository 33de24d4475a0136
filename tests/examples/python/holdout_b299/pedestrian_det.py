# ruff: noqa
# Hold-out batch 299 (16 short benchmark-format files). Measured once in session 10 (round 84): 13/19 (68%) at medium+.
"""Fine-tune Faster R-CNN (ResNet-50 FPN) on CityPersons-style pedestrian boxes."""
import argparse
import math

import torch
from torch.utils.data import DataLoader
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from data.citypersons import CityPersons, collate_det  # project-local dataset


def _fpn_balance(module, inputs, output):
    # equalise pyramid level magnitudes so small pedestrians don't dominate the RPN
    if module.training:
        return {k: v * (0.5 if k in ("0", "1") else 1.0) for k, v in output.items()}  # todoruleid: family 2 (missed)
    return output


def build_model(num_classes=2, init=None):
    model = fasterrcnn_resnet50_fpn(weights="DEFAULT", min_size=800, max_size=1333)
    in_f = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_f, num_classes)
    if init:
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.backbone.register_forward_hook(_fpn_balance)  # todoruleid: family 2 (missed)
    return model


def main(args):
    model = build_model(init=args.init).cuda()
    ds = CityPersons(args.root, split="train", hflip=0.5)
    dl = DataLoader(ds, batch_size=4, shuffle=True, num_workers=6, collate_fn=collate_det)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)
    warm = 500
    total = args.epochs * len(dl)
    sched = torch.optim.lr_scheduler.LambdaLR(  # ok: MLS302, MLS303, MLS304, MLS305
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * s / total)))
    for epoch in range(args.epochs):
        model.train()
        for images, targets in dl:
            images = [im.cuda() for im in images]
            targets = [{k: v.cuda() for k, v in t.items()} for t in targets]
            losses = model(images, targets)
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
        torch.save(model.state_dict(), f"{args.out}/frcnn_ep{epoch}.pth")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="data/citypersons")
    ap.add_argument("--init", default=None)
    ap.add_argument("--out", default="runs/frcnn")
    ap.add_argument("--epochs", type=int, default=12)
    main(ap.parse_args())
