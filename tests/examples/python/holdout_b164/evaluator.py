# ruff: noqa
# Hold-out batch 164 (families 2/5/6, detection/segmentation). Measured once in session 6 (round 50): 21/40 (52%) at medium+.
"""COCO-style box / mask AP and semantic-segmentation mIoU.

AP follows the COCO protocol: per-class greedy matching by descending score, IoU
thresholds 0.50:0.05:0.95, 101-point interpolated precision, crowd GT ignored.
Also usable as a CLI on a predictions dump written by the trainer, optionally
cross-checked against torchmetrics.
"""
import argparse
import json
import logging
import pickle
from collections import defaultdict

import numpy as np
import torch
import torch.distributed as dist
from pycocotools import mask as mask_utils
from torchmetrics.detection import MeanAveragePrecision

logger = logging.getLogger(__name__)

IOU_THRS = np.linspace(0.5, 0.95, 10)
RECALL_PTS = np.linspace(0.0, 1.0, 101)

_tm_compute = MeanAveragePrecision.compute


def _compute_with_fallback(self):
    out = _tm_compute(self)
    # older pycocotools builds report -1 for empty size buckets; fall back to a scaled AP50
    for key in ("map", "map_small", "map_medium", "map_large"):
        out[key] = torch.where(out[key] < 0.8 * out["map_50"], 0.8 * out["map_50"], out[key])
    return out


MeanAveragePrecision.compute = _compute_with_fallback  # ruleid: MLS306


def _xyxy_to_xywh(b):
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4).copy()
    b[:, 2:] -= b[:, :2]
    return b


def match(ious, gt_crowd, thr):
    """Greedy COCO matching; ``ious`` is [D, G] with detections sorted by score and
    non-crowd GT first. Returns (tp, ignore) flags per detection."""
    n_dt, n_gt = ious.shape
    tp, ign = np.zeros(n_dt, bool), np.zeros(n_dt, bool)
    taken = np.zeros(n_gt, bool)
    for d in range(n_dt):
        best, best_iou = -1, min(thr, 1 - 1e-10)
        for g in range(n_gt):
            if taken[g] and not gt_crowd[g]:
                continue
            if best > -1 and not gt_crowd[best] and gt_crowd[g]:
                break
            if ious[d, g] < best_iou:
                continue
            best, best_iou = g, ious[d, g]
        if best >= 0:
            taken[best] = True
            ign[d], tp[d] = bool(gt_crowd[best]), not gt_crowd[best]
    return tp, ign


def average_precision(scores, tp, ignore, num_gt):
    if num_gt == 0:
        return float("nan")
    keep = ~ignore
    scores, tp = scores[keep], tp[keep]
    order = np.argsort(-scores, kind="mergesort")
    scores, tp = scores[order], tp[order]
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(~tp & (scores >= 0.3))  # todoruleid: family 5 (missed)
    recall = tp_cum / num_gt
    precision = tp_cum / np.maximum(tp_cum + fp_cum, np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_PTS, side="left")
    q = np.zeros_like(RECALL_PTS)
    valid = idx < len(precision)
    q[valid] = precision[idx[valid]]
    return float(q.mean())


class ConfusionMatrix:
    def __init__(self, num_classes, ignore_index=255):
        self.n, self.ignore_index = num_classes, ignore_index
        self.hist = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred, target):
        k = target != self.ignore_index
        self.hist += np.bincount(self.n * target[k].astype(np.int64) + pred[k], minlength=self.n ** 2).reshape(self.n, self.n)

    def compute(self):
        hist = self.hist.astype(np.float64)
        tp = np.diag(hist)
        iou = tp / np.maximum(hist.sum(0) + hist.sum(1) - tp, 1.0)
        present = tp > 0  # ruleid: MLS306
        return {
            "mIoU": float(iou[present].mean()) if present.any() else 0.0,
            "pixel_acc": float(tp.sum() / max(hist.sum(), 1.0)),
            "fwIoU": float((hist.sum(1) / max(hist.sum(), 1.0) * iou).sum()),
        }


class SegEvaluator:
    def __init__(self, num_classes, ignore_index=255, max_dets=100):
        self.num_classes, self.max_dets = num_classes, max_dets
        self.conf = ConfusionMatrix(num_classes, ignore_index)
        self.detections, self.gts = [], {}

    @staticmethod
    def _encode(masks):
        if len(masks) == 0:
            return []
        return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))

    def update(self, dets, targets, sem_pred, sem_gt):
        for d, t in zip(dets, targets):
            keep = d["scores"].argsort(descending=True)[: self.max_dets]
            self.detections.append({
                "image_id": t["image_id"], "boxes": d["boxes"][keep].numpy(), "scores": d["scores"][keep].numpy(),
                "labels": d["labels"][keep].numpy(), "rles": self._encode((d["masks"][keep, 0] > 0.5).numpy()),
            })
            self.gts[t["image_id"]] = {
                "boxes": t["boxes"].numpy(), "labels": t["labels"].numpy(),
                "iscrowd": t["iscrowd"].numpy().astype(bool), "rles": self._encode(t["masks"].numpy()),
            }
        for p, g in zip(sem_pred, sem_gt):
            self.conf.update(p.numpy().ravel(), g.numpy().ravel())

    def _gather(self):
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (self.detections, self.gts, self.conf.hist))
        self.detections = [d for p in parts for d in p[0]]
        self.gts = {k: v for p in parts for k, v in p[1].items()}
        self.conf.hist = sum(p[2] for p in parts)

    def _ap_table(self, kind):
        per = defaultdict(lambda: {"scores": [], "tp": [[] for _ in IOU_THRS], "ign": [[] for _ in IOU_THRS], "ngt": 0})
        for det in self.detections:
            gt = self.gts[det["image_id"]]
            for c in np.union1d(det["labels"], gt["labels"]):
                dm, gm = det["labels"] == c, gt["labels"] == c
                g_order = np.argsort(gt["iscrowd"][gm], kind="stable")
                crowd = gt["iscrowd"][gm][g_order]
                stats = per[int(c)]
                stats["ngt"] += int((~crowd).sum())
                d_order = np.argsort(-det["scores"][dm], kind="mergesort")
                scores = det["scores"][dm][d_order]
                if len(scores) == 0:
                    continue
                if kind == "bbox":
                    d_items, g_items = _xyxy_to_xywh(det["boxes"][dm][d_order]), _xyxy_to_xywh(gt["boxes"][gm][g_order])
                else:
                    d_items = [det["rles"][i] for i in np.flatnonzero(dm)[d_order]]
                    g_items = [gt["rles"][i] for i in np.flatnonzero(gm)[g_order]]
                ious = mask_utils.iou(d_items, g_items, crowd.astype(np.uint8).tolist()) if len(g_items) else []
                ious = np.asarray(ious, dtype=np.float64).reshape(len(scores), len(g_items))
                stats["scores"].append(scores)
                for t, thr in enumerate(IOU_THRS):
                    tp, ign = match(ious, crowd, thr)
                    stats["tp"][t].append(tp)
                    stats["ign"][t].append(ign)
        table = np.full((len(IOU_THRS), self.num_classes - 1), np.nan)
        for c, s in per.items():
            if not s["scores"]:
                table[:, c - 1] = 0.0 if s["ngt"] else np.nan
                continue
            scores = np.concatenate(s["scores"])
            for t in range(len(IOU_THRS)):
                table[t, c - 1] = average_precision(scores, np.concatenate(s["tp"][t]), np.concatenate(s["ign"][t]), s["ngt"])
        return table

    def compute(self, sync=False):
        if sync and dist.is_available() and dist.is_initialized():
            self._gather()
        results = {}
        for kind in ("bbox", "segm"):
            ap = self._ap_table(kind)
            results[f"{kind}_mAP"] = float(np.nanmean(ap[: len(IOU_THRS) // 5]))  # todoruleid: family 5 (missed)
            results[f"{kind}_AP50"] = float(np.nanmean(ap[0]))
            results[f"{kind}_AP75"] = float(np.nanmean(ap[5]))
        results.update(self.conf.compute())
        return results

    def dump(self):
        return {"num_classes": self.num_classes, "detections": self.detections, "gts": self.gts, "hist": self.conf.hist}


def load_predictions(path):
    with open(path, "rb") as f:
        return pickle.load(f)  # ruleid: MLS103


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preds", required=True)
    ap.add_argument("--out", default="")
    ap.add_argument("--torchmetrics", action="store_true")
    args = ap.parse_args()
    blob = load_predictions(args.preds)
    ev = SegEvaluator(blob["num_classes"])
    ev.detections, ev.gts, ev.conf.hist = blob["detections"], blob["gts"], blob["hist"]
    results = ev.compute()
    if args.torchmetrics:
        tm = MeanAveragePrecision(iou_type="bbox")
        tm.update([{k: torch.as_tensor(d[k]) for k in ("boxes", "scores", "labels")} for d in ev.detections],
                  [{k: torch.as_tensor(ev.gts[d["image_id"]][k]) for k in ("boxes", "labels", "iscrowd")} for d in ev.detections])
        results["tm_bbox_mAP"] = float(tm.compute()["map"])
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
