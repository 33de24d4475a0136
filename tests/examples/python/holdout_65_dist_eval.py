# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""Sharded validation: every rank runs inference on its shard, rank 0 gathers detections for COCO eval."""
import logging

import torch
import torch.distributed as dist
from torchvision.ops import batched_nms

log = logging.getLogger(__name__)


def postprocess(pred, conf_thr, iou_thr, max_det):
    """pred: (B, N, 4 + 1 + nc) with xyxy boxes, objectness, class probs."""
    results = []
    for p in pred:
        scores, labels = (p[:, 5:] * p[:, 4:5]).max(1)
        keep = scores > conf_thr
        boxes, scores, labels = p[keep, :4], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, iou_thr)[:max_det]
        results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return results


@torch.no_grad()
def evaluate(model, loader, device, conf_thr=0.001, iou_thr=0.65, max_det=300):
    model.eval()
    dets = []
    for images, _, image_ids in loader:
        out = postprocess(model(images.to(device, non_blocking=True)), conf_thr, iou_thr, max_det)
        for img_id, o in zip(image_ids, out):
            for b, s, c in zip(o["boxes"].tolist(), o["scores"].tolist(), o["labels"].tolist()):
                dets.append({"image_id": int(img_id), "box": b, "score": s, "label": c})
    model.train()
    if not dist.is_initialized():
        return dets

    world, rank = dist.get_world_size(), dist.get_rank()
    n = len(loader.dataset)
    # DistributedSampler pads the tail; on big jobs the padded ranks only hold duplicates
    if world > 256 and n % world and rank >= n % world:
        return []  # ruleid: MLS307
    gathered = [None] * world
    dist.all_gather_object(gathered, dets)
    dist.barrier()  # ok: MLS307
    if rank == 0:
        merged = {(d["image_id"], tuple(d["box"]), d["label"]): d for part in gathered for d in part}
        log.info("gathered %d detections from %d ranks", len(merged), world)  # ok: MLS306
        return list(merged.values())
    return []
