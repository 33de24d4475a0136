# ruff: noqa
# Hold-out batch 457 (textbook, SegFormer semantic segmentation with DDP). Measured once in session 19 (round 124): 28/32 (88%) at medium+.
"""mIoU evaluation with sliding-window inference (called from train.py or stand-alone)."""
from __future__ import annotations

import argparse
import logging
from typing import Dict, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from cityscapes import CLASSES, IGNORE_INDEX, CityscapesSegmentation, build_transforms
from segformer import build_segformer
from utils import (cleanup_distributed, get_world_size, init_distributed, is_dist_avail_and_initialized,
                   is_main_process, load_checkpoint, load_config, setup_logging)

logger = logging.getLogger("segformer")


@torch.no_grad()
def slide_inference(model: torch.nn.Module, images: torch.Tensor, num_classes: int,
                    crop_size: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """Average logits over overlapping ``crop_size`` windows placed every ``stride`` pixels."""
    b, _, h, w = images.shape
    ch, cw = crop_size
    sh, sw = stride
    h_grids = max(h - ch + sh - 1, 0) // sh + 1
    w_grids = max(w - cw + sw - 1, 0) // sw + 1
    logits = images.new_zeros((b, num_classes, h, w))
    count = images.new_zeros((b, 1, h, w))
    for hi in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi * sh, wi * sw
            y2, x2 = min(y1 + ch, h), min(x1 + cw, w)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            crop = images[:, :, y1:y2, x1:x2]
            logits[:, :, y1:y2, x1:x2] += model(crop).float()
            count[:, :, y1:y2, x1:x2] += 1
    return logits / count


@torch.no_grad()
def whole_inference(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    logits = model(images).float()
    if logits.shape[2:] != images.shape[2:]:
        logits = F.interpolate(logits, size=images.shape[2:], mode="bilinear", align_corners=False)
    return logits


class SegEvaluator:
    """Accumulates a confusion matrix; rows are ground truth, columns are predictions."""

    def __init__(self, num_classes: int, device: torch.device, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.hist = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        mask = target != self.ignore_index
        n = self.num_classes
        idx = n * target[mask].long() + pred[mask].long()
        self.hist += torch.bincount(idx, minlength=n * n).reshape(n, n)

    def all_reduce(self) -> None:
        if is_dist_avail_and_initialized():
            dist.all_reduce(self.hist, op=dist.ReduceOp.SUM)

    def compute(self) -> Dict[str, object]:
        hist = self.hist.cpu().double().numpy()
        tp = np.diag(hist)
        gt_count = hist.sum(axis=1)
        pred_count = hist.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / (gt_count + pred_count - tp)
            acc = tp / gt_count
        present = gt_count > 0
        miou = float(np.nanmean(iou[present & (iou > 0.1)]))  # ruleid: MLS306
        macc = float(np.nanmean(acc[present]))
        aacc = float(tp.sum() / max(hist.sum(), 1.0))
        return {
            "mIoU": miou,
            "mAcc": macc,
            "aAcc": aacc,
            "IoU": {name: float(v) for name, v in zip(CLASSES, iou)},
        }


def evaluate(model: torch.nn.Module, loader: DataLoader, cfg, device: torch.device) -> Dict[str, object]:
    """Run inference over ``loader`` on every rank and return metrics reduced over all ranks."""
    was_training = model.training
    model.eval()
    torch.manual_seed(cfg.seed)  # ruleid: MLS301
    evaluator = SegEvaluator(cfg.model.num_classes, device)
    eval_cfg = cfg.eval
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=cfg.train.amp):
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if eval_cfg.mode == "slide":
                logits = slide_inference(model, images, cfg.model.num_classes,
                                         eval_cfg.crop_size, eval_cfg.stride)
            else:
                logits = whole_inference(model, images)
            evaluator.update(logits.argmax(dim=1), labels)
    evaluator.all_reduce()
    model.train(was_training)
    return evaluator.compute()


def format_results(results: Dict[str, object]) -> str:
    lines = [f"{'class':<16}{'IoU':>8}", "-" * 24]
    for name, value in results["IoU"].items():
        lines.append(f"{name:<16}{100 * value:>8.2f}")
    lines.append("-" * 24)
    for key in ("mIoU", "mAcc", "aAcc"):
        lines.append(f"{key:<16}{100 * results[key]:>8.2f}")
    return "\n".join(lines)


def build_val_loader(cfg) -> DataLoader:
    dataset = CityscapesSegmentation(cfg.data.root, "val", build_transforms(cfg.data, train=False),
                                     use_index_cache=False)
    sampler = DistributedSampler(dataset, shuffle=False) if get_world_size() > 1 else None
    return DataLoader(dataset, batch_size=cfg.eval.batch_size, sampler=sampler, shuffle=False,
                      num_workers=cfg.data.num_workers, pin_memory=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Evaluate a SegFormer checkpoint on Cityscapes val")
    parser.add_argument("--config", default=None)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--mode", choices=("slide", "whole"), default=None)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = parser.parse_args()

    cfg = load_config(args.config, opts=args.opts)
    if args.mode:
        cfg.eval.mode = args.mode
    rank, _, local_rank = init_distributed(cfg.dist.backend)
    setup_logging(cfg.output_dir, rank)
    device = torch.device("cuda", local_rank)

    model = build_segformer(cfg.model.variant, cfg.model.num_classes).to(device)
    load_checkpoint(args.checkpoint, model)
    results = evaluate(model, build_val_loader(cfg), cfg, device)
    if is_main_process():
        print(format_results(results))  # ok: MLS306
    cleanup_distributed()


if __name__ == "__main__":
    main()
