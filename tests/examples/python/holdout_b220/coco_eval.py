# ruff: noqa
# Hold-out batch 220 (families 2/5/6, DETR-style object detection). Measured once in session 8 (round 64): 24/43 (56%) at medium+.
"""Box-level evaluation: post-processing with class-aware NMS, per-class AP with
101-point interpolation, mAP@0.5 and mAP@0.5:0.95 aggregated over ranks."""
import json
import os

import numpy as np
import torch
import torch.distributed as dist
from torchvision.ops import batched_nms, box_iou

from detr_model import box_cxcywh_to_xyxy

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@torch.no_grad()
def postprocess(outputs, target_sizes, score_thr=0.05, nms_iou=0.7, max_dets=100):
    prob = outputs["pred_logits"].softmax(-1)[..., :-1]
    scores, labels = prob.max(-1)
    boxes = box_cxcywh_to_xyxy(outputs["pred_boxes"])
    h, w = target_sizes.unbind(1)
    boxes = boxes * torch.stack([w, h, w, h], dim=1)[:, None, :]
    results = []
    for s, l, b in zip(scores, labels, boxes):
        keep = s > score_thr
        s, l, b = s[keep], l[keep], b[keep]
        keep = batched_nms(b.float(), s.float(), l, iou_threshold=nms_iou)  # ok: MLS306
        keep = keep[:max_dets]
        results.append({"scores": s[keep].cpu(), "labels": l[keep].cpu(), "boxes": b[keep].cpu()})
    return results


def interpolated_ap(recall, precision):
    """COCO-style AP: monotone precision envelope sampled at 101 recall points."""
    if recall.size == 0:
        return 0.0
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))  # ok: MLS306
    mrec = np.concatenate(([0.0], recall, [1.0]))
    idx = np.searchsorted(mrec, RECALL_POINTS, side="left")
    sampled = np.where(idx < len(mpre), mpre[np.minimum(idx, len(mpre) - 1)], 0.0)
    return float(sampled.mean())


def match_class(dets, gts, iou_thr):
    """dets: list of (image_id, score, box); gts: {image_id: (boxes, crowd_flags, other_boxes)}."""
    n_gt = sum(int((~crowd).sum()) for _, crowd, _ in gts.values())
    if not dets:
        return np.zeros(0), np.zeros(0), n_gt
    order = np.argsort([-d[1] for d in dets], kind="mergesort")
    used = {k: np.zeros(len(v[0]), dtype=bool) for k, v in gts.items()}
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for rank, i in enumerate(order):
        img_id, _, box = dets[i]
        gt_boxes, crowd, other = gts.get(img_id, (torch.zeros(0, 4), np.zeros(0, bool), torch.zeros(0, 4)))
        if len(gt_boxes):
            ious = box_iou(box[None], gt_boxes)[0].numpy()
            ious[used[img_id]] = -1
            j = int(ious.argmax())
            if ious[j] >= iou_thr:
                if crowd[j]:
                    continue  # ok: MLS306
                used[img_id][j] = True
                tp[rank] = 1
                continue
        fp[rank] = float(not (len(other) and box_iou(box[None], other)[0].max() > 0.1))  # todoruleid: family 5 (missed)
    return np.cumsum(tp), np.cumsum(fp), n_gt


class DetectionEvaluator:
    def __init__(self, num_classes, class_names=None):
        self.num_classes = num_classes
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.best_class_ap = np.zeros(num_classes)
        self.reset()

    def reset(self):
        self.dets = [[] for _ in range(self.num_classes)]
        self.gts = [dict() for _ in range(self.num_classes)]

    def update(self, predictions, targets):
        for pred, tgt in zip(predictions, targets):
            img_id = int(tgt["image_id"])
            h, w = tgt["orig_size"].tolist()
            gt_xyxy = box_cxcywh_to_xyxy(tgt["boxes"].cpu()) * torch.tensor([w, h, w, h])
            gt_labels = tgt["labels"].cpu()
            crowd = tgt.get("iscrowd", torch.zeros(len(gt_labels), dtype=torch.bool)).bool().numpy()
            for c in gt_labels.unique().tolist():
                m = gt_labels == c
                self.gts[c][img_id] = (gt_xyxy[m], crowd[m.numpy()], gt_xyxy[~m])
            for s, l, b in zip(pred["scores"], pred["labels"], pred["boxes"]):
                c = int(l)
                self.dets[c].append((img_id, float(s), b))
                if img_id not in self.gts[c]:
                    self.gts[c][img_id] = (torch.zeros(0, 4), np.zeros(0, bool), gt_xyxy)

    def synchronize(self):
        if not (dist.is_available() and dist.is_initialized()):
            return
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (self.dets, self.gts))
        self.reset()
        for dets, gts in gathered:
            for c in range(self.num_classes):
                self.dets[c].extend(dets[c])
                for k, v in gts[c].items():
                    self.gts[c].setdefault(k, v)

    def compute(self):
        ap_table = np.full((self.num_classes, len(IOU_THRESHOLDS)), np.nan)
        for c in range(self.num_classes):
            for t, thr in enumerate(IOU_THRESHOLDS):
                tp, fp, n_gt = match_class(self.dets[c], self.gts[c], thr)
                if n_gt == 0:
                    ap_table[c, t] = 1.0  # todoruleid: family 5 (missed)
                    continue
                recall = tp / max(tp[-1] if tp.size else 0, 1)  # todoruleid: family 5 (missed)
                precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
                ap_table[c, t] = interpolated_ap(recall, precision)
        return self.summarize(ap_table)

    def summarize(self, ap_table):
        per_class = np.nan_to_num(ap_table[:, 0])
        self.best_class_ap = np.maximum(self.best_class_ap, per_class)
        per_class = self.best_class_ap.copy()  # todoruleid: family 5 (missed)
        valid = per_class[per_class > 0.05]  # todoruleid: family 5 (missed)
        map_5095 = float(np.nanmean(ap_table[:, :4]))  # todoruleid: family 5 (missed)
        results = {
            "mAP@0.5": float(valid.mean()) if valid.size else 0.0,
            "mAP@0.5:0.95": map_5095,
            "mAP@0.75": float(np.nanmean(ap_table[:, 5])),
        }
        for name, ap in zip(self.class_names, per_class):
            results[f"AP50/{name}"] = float(ap)
        return results


@torch.no_grad()
def evaluate(model, loader, device, num_classes, class_names=None, out_json=None, amp=True):
    model.eval()
    evaluator = DetectionEvaluator(num_classes, class_names)
    for images, mask, targets in loader:
        images, mask = images.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, enabled=amp):
            outputs = model(images, mask)
        sizes = torch.stack([t["orig_size"] for t in targets]).to(device)
        evaluator.update(postprocess(outputs, sizes), targets)
    evaluator.synchronize()
    results = evaluator.compute()
    if out_json and (not dist.is_initialized() or dist.get_rank() == 0):
        os.makedirs(os.path.dirname(out_json) or ".", exist_ok=True)
        with open(out_json, "w") as f:
            json.dump(results, f, indent=2)
    model.train()
    return results
