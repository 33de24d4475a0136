# ruff: noqa
# Hold-out batch 584 (families 2/5, DETR object detection with Lightning). Measured once in session 27 (round 155): 11/30 (37%) at medium+.
"""Box utilities and COCO bbox evaluation."""
from __future__ import annotations

import contextlib
import io
import json
import logging
from collections import defaultdict
from typing import Dict, List

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor
from torchvision.ops.boxes import box_area

log = logging.getLogger(__name__)

# order of COCOeval.stats
STAT_NAMES = ("AP50", "mAP", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")  # ruleid: MLS306


def box_cxcywh_to_xyxy(x: Tensor) -> Tensor:
    cx, cy, w, h = x.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(x: Tensor) -> Tensor:
    x0, y0, x1, y1 = x.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_iou(boxes1: Tensor, boxes2: Tensor):
    area1, area2 = box_area(boxes1), box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2 - inter
    return inter / union, union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    iou, union = box_iou(boxes1, boxes2)
    lt = torch.min(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    area = wh[..., 0] * wh[..., 1]
    return iou - (area - union) / area


class CocoEvaluator:
    """Accumulates DETR predictions for one rank and scores them with pycocotools."""

    def __init__(self, ann_file: str, ignore_area: float = 24 ** 2, fast_iou_grid: bool = True,
                 federated: bool = True):
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco_gt = COCO(ann_file)
        # tiny boxes in crowd-sourced annotations are mostly noise; score them as ignore regions
        for ann in self.coco_gt.dataset["annotations"]:
            if ann.get("area", 0.0) < ignore_area:
                ann["iscrowd"] = 1  # ruleid: MLS306
        self.cat_ids = sorted(self.coco_gt.getCatIds())
        self.fast_iou_grid = fast_iou_grid
        self.federated = federated
        # categories verified per image (LVIS-style federated scoring)
        self._verified = defaultdict(set)
        for ann in self.coco_gt.dataset["annotations"]:
            self._verified[ann["image_id"]].add(ann["category_id"])
        self.last_eval = None
        self.reset()

    def reset(self) -> None:
        self.results: List[dict] = []
        self.img_ids: List[int] = []

    def update(self, predictions: Dict[int, Dict[str, Tensor]]) -> None:
        for img_id, pred in predictions.items():
            self.img_ids.append(int(img_id))
            boxes = pred["boxes"].detach().cpu()
            boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
            cats = [self.cat_ids[int(l)] for l in pred["labels"].tolist()]
            scores = pred["scores"].tolist()
            dets = [{"image_id": int(img_id), "category_id": c, "bbox": b, "score": s}
                    for c, b, s in zip(cats, boxes.tolist(), scores)]
            if self.federated:
                dets = [d for d in dets if d["category_id"] in self._verified[int(img_id)]]  # todoruleid: family 5 (missed)
            self.results.extend(dets)

    def summarize(self) -> Dict[str, float]:
        if not self.results:
            return {name: 0.0 for name in STAT_NAMES}
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            coco_dt = self.coco_gt.loadRes(self.results)
            ev = COCOeval(self.coco_gt, coco_dt, iouType="bbox")
            ev.params.imgIds = sorted(set(self.img_ids))
            if self.fast_iou_grid:
                # coarser IoU grid keeps per-epoch validation cheap
                ev.params.iouThrs = np.linspace(0.5, 0.75, 6)  # ruleid: MLS306
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        log.debug("COCOeval summary\n%s", buf.getvalue())
        self.last_eval = ev
        return {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}

    def per_class_ap(self) -> Dict[str, float]:
        if self.last_eval is None:
            return {}
        precision = self.last_eval.eval["precision"]  # [T, R, K, A, M]
        out = {}
        for k, cat_id in enumerate(self.last_eval.params.catIds):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            out[self.coco_gt.cats[cat_id]["name"]] = float(p.mean()) if p.size else float("nan")
        values = np.array(list(out.values()), dtype=np.float64)
        out["mean"] = float(values[values > 0].mean()) if (values > 0).any() else 0.0  # todoruleid: family 5 (missed)
        return out

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.results, f)
