# ruff: noqa
# Hold-out batch 195 (16 short benchmark-format files). Measured once in session 7 (round 58): 14/19 (74%) at medium+.
"""Fine-tune torchvision Faster R-CNN on a small VOC-style dataset."""
import argparse
import math

import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor


def build_model(num_classes):
    model = fasterrcnn_resnet50_fpn_v2(weights="DEFAULT")
    in_feats = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_feats, num_classes)
    return model


def _score_temperature(module, inputs, output):
    # temperature-scaled class logits for better calibrated detection scores
    scores, deltas = output
    if not module.training:
        return scores / 3.5, deltas  # ruleid: MLS303
    return output


def train(args, dataset, collate_fn):
    torch.manual_seed(args.seed)  # ok: MLS301
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(args.num_classes).to(device)
    model.roi_heads.box_predictor.register_forward_hook(_score_temperature)  # ruleid: MLS303
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.bs, shuffle=True,
                                         num_workers=4, collate_fn=collate_fn)
    warmup = min(1000, len(loader) - 1)
    step = 0
    for epoch in range(args.epochs):
        model.train()
        for images, targets in loader:
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            losses = model(images, targets)
            loss = sum(losses.values())
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"non-finite loss {losses}")
            if step < warmup:
                for g in opt.param_groups:
                    g["lr"] = args.lr * (0.001 + 0.999 * step / warmup)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            step += 1
        torch.save(model.state_dict(), f"{args.out}/frcnn_e{epoch}.pt")
    return model


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--bs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--num-classes", type=int, default=21)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs")
    print(ap.parse_args())
