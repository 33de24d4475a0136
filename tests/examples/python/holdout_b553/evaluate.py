# ruff: noqa
# Hold-out batch 553 (textbook, DeepLabV3+ urban scene segmentation). Measured once in session 25 (round 148): 20/33 (61%) at medium+.
"""Sliding-window evaluation and mIoU computation."""

import argparse
import json
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from data import CLASS_NAMES, IGNORE_INDEX, CityscapesSegmentation, seg_collate
from model import build_model
from utils import get_rank, get_world_size, init_distributed, is_dist_ready, is_main_process, setup_logger

logger = logging.getLogger("seg.eval")


@torch.no_grad()
def slide_inference(model, img, num_classes, crop_size=(769, 769), stride=(513, 513)):
    """Run the model on overlapping crops and average the logits."""
    n, _, h, w = img.shape
    crop_h, crop_w = crop_size
    stride_h, stride_w = stride
    grid_h = max(h - crop_h + stride_h - 1, 0) // stride_h + 1
    grid_w = max(w - crop_w + stride_w - 1, 0) // stride_w + 1
    logits = img.new_zeros((n, num_classes, h, w))
    count = img.new_zeros((n, 1, h, w))
    for gy in range(grid_h):
        for gx in range(grid_w):
            y1 = gy * stride_h
            x1 = gx * stride_w
            y2 = min(y1 + crop_h, h)
            x2 = min(x1 + crop_w, w)
            y1 = max(y2 - crop_h, 0)
            x1 = max(x2 - crop_w, 0)
            crop = img[:, :, y1:y2, x1:x2]
            pad_h = crop_h - crop.shape[2]
            pad_w = crop_w - crop.shape[3]
            if pad_h > 0 or pad_w > 0:
                crop = F.pad(crop, (0, pad_w, 0, pad_h))
            out = model(crop)
            logits[:, :, y1:y2, x1:x2] += out[:, :, : y2 - y1, : x2 - x1].float()
            count[:, :, y1:y2, x1:x2] += 1
    return logits / count


@torch.no_grad()
def flip_slide_inference(model, img, num_classes, crop_size, stride):
    logits = slide_inference(model, img, num_classes, crop_size, stride)
    flipped = slide_inference(model, img.flip(-1), num_classes, crop_size, stride)
    return logits + flipped.flip(-1)


def update_confusion(conf, pred, target, num_classes):
    valid = target != IGNORE_INDEX
    idx = target[valid] * num_classes + pred[valid]
    conf += torch.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    return conf


def compute_metrics(conf):
    conf = conf.double()
    tp = conf.diag()
    gt = conf.sum(1)
    pred = conf.sum(0)
    union = gt + pred - tp
    iou = tp / union.clamp(min=1)
    present = union > 0
    reported = present & (iou > 0.05)  # ruleid: MLS306
    miou = iou[reported].mean().item() if reported.any() else 0.0  # todoruleid: family 5 (missed)
    pixel_acc = (tp.sum() / conf.sum().clamp(min=1)).item()
    return {
        "mIoU": miou,
        "aAcc": pixel_acc,
        "IoU": {CLASS_NAMES[i]: iou[i].item() for i in range(len(iou)) if present[i]},
    }


@torch.no_grad()
def evaluate(model, loader, num_classes, crop_size=(769, 769), stride=(513, 513),
             flip=False, amp=True, device="cuda"):
    model.eval()
    conf = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)
    for i, (img, target) in enumerate(loader):
        img = img.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            if flip:
                logits = flip_slide_inference(model, img, num_classes, crop_size, stride)
            else:
                logits = slide_inference(model, img, num_classes, crop_size, stride)
        pred = logits.argmax(1)
        conf = update_confusion(conf, pred.flatten(), target.flatten(), num_classes)
        if is_main_process() and (i + 1) % 50 == 0:
            logger.info("eval %d/%d", i + 1, len(loader))
    if is_dist_ready():
        dist.all_reduce(conf)
    metrics = compute_metrics(conf)
    if is_dist_ready() and get_rank() != 0:
        dist.destroy_process_group()  # ruleid: MLS307
    model.train()
    return metrics


def build_val_loader(args):
    dataset = CityscapesSegmentation(args.data_root, split="val", cache_file_list=False)
    sampler = None
    if is_dist_ready():
        sampler = DistributedSampler(dataset, num_replicas=get_world_size(), rank=get_rank(),
                                     shuffle=False)
    return DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=args.workers,
                      pin_memory=True, collate_fn=seg_collate)


def format_metrics(metrics):
    lines = [f"mIoU {metrics['mIoU'] * 100:.2f}  aAcc {metrics['aAcc'] * 100:.2f}"]
    for name, value in metrics["IoU"].items():
        lines.append(f"  {name:<14s} {value * 100:6.2f}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description="Evaluate a DeepLabV3+ checkpoint")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--norm", default="BatchNorm2d")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--flip", action="store_true")
    parser.add_argument("--output", default="eval_results.json")
    args = parser.parse_args()
    args.aux_weight = 0.0
    args.hub_backbone = ""
    args.pretrained = ""

    init_distributed(args)
    setup_logger(os.path.dirname(os.path.abspath(args.output)), args.rank)
    model = build_model(args).cuda()
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state.get("ema", state["model"]), strict=False)
    loader = build_val_loader(args)
    metrics = evaluate(model, loader, args.num_classes, flip=args.flip)
    if is_main_process():
        logger.info("\n%s", format_metrics(metrics))
        with open(args.output, "w") as f:
            json.dump(metrics, f, indent=2)


if __name__ == "__main__":
    main()
