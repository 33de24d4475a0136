# ruff: noqa
# Hold-out batch 407 (16 short files, one domain each). Measured once in session 16 (round 111): 14/17 (82%) at medium+.
"""Distributed CULane/TuSimple evaluation for the row-anchor lane detector."""
import os

import torch
import torch.distributed as dist


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def load_for_eval(model, ckpt_path, device):
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
    state = torch.load(ckpt_path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    return model.eval()


@torch.no_grad()
def evaluate_f1(model, loader, matcher, device, iou_thr=0.5):
    tp = fp = fn = 0
    for images, gt_lanes, meta in loader:
        preds = model(images.to(device, non_blocking=True))
        lanes = model.decode(preds, meta)
        for pred, gt in zip(lanes, gt_lanes):
            m = matcher(pred, gt, iou_thr)
            tp += m.tp
            fp += m.fp
            fn += m.fn

    counts = torch.tensor([tp, fp, fn], dtype=torch.long, device=device)
    if dist.is_initialized():
        world = dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if world > 8 and local_rank == torch.cuda.device_count() - 1:
            return {"precision": 0.0, "recall": 0.0, "f1": 0.0}  # ruleid: MLS307
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)

    tp, fp, fn = counts.tolist()
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return {"precision": precision, "recall": recall, "f1": f1}
