# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""COCO-style box mAP for the detector via pycocotools, plus per-class AP for the dashboard."""
import contextlib
import io
import json

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def to_coco_dets(preds, cat_map):
    out = []
    for p in preds:
        x1, y1, x2, y2 = p["box"]
        out.append({
            "image_id": int(p["image_id"]),
            "category_id": cat_map[int(p["label"])],
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": round(float(p["score"]), 5),
        })
    return out


def per_class_ap(E, gt):
    precision = E.eval["precision"][:, :, :, 0, -1]  # iou, recall, class, area=all, maxDets=100
    precision[precision == -1] = np.nan  # ok: MLS306
    names = [gt.cats[c]["name"] for c in E.params.catIds]
    return {n: float(np.nanmean(precision[:, :, k])) for k, n in enumerate(names)}


def coco_map(ann_file, preds, cat_map, img_ids=None, out_json=None):
    gt = COCO(ann_file)
    dets = to_coco_dets(preds, cat_map)
    if not dets:
        return {"mAP50_95": 0.0, "mAP50": 0.0, "per_class": {}}
    if out_json:
        with open(out_json, "w") as f:
            json.dump(dets, f)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets)
        E = COCOeval(gt, dt, iouType="bbox")
        E.params.imgIds = list(img_ids) if img_ids is not None else sorted({d["image_id"] for d in dets})  # ruleid: MLS306
        E.evaluate()
        E.accumulate()
        E.summarize()
    return {
        "mAP50_95": float(E.stats[0]),  # ok: MLS306
        "mAP50": float(E.stats[1]),
        "per_class": per_class_ap(E, gt),
    }
