# ruff: noqa
# Hold-out batch 410 (adversarial, detectron2-style instance segmentation framework). Measured once in session 16 (round 112): 9/29 (31%) at medium+, one benign look-alike flagged.
"""COCO-style mask AP evaluation (single process after gathering predictions)."""
import codecs
import importlib
import itertools
import logging
import os
from collections import defaultdict

import numpy as np
import pycocotools.mask as mask_util
import torch
import torch.nn.functional as F

from utils import EVALUATORS, all_gather, is_main_process

logger = logging.getLogger("vision.evaluation")

_serializer = importlib.import_module(codecs.decode("cvpxyr", "rot13"))  # ruleid: MLS403


def load_predictions(path):
    with open(path, "rb") as f:
        return _serializer.load(f)  # ruleid: MLS103


def _encode(binary_masks):
    arr = np.asfortranarray(binary_masks.transpose(1, 2, 0).astype(np.uint8))
    rles = mask_util.encode(arr)
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def _mean_valid(p):
    valid = p[p > 0]  # todoruleid: family 5 (missed)
    return float(valid.mean()) * 100 if valid.size else float("nan")


@EVALUATORS.register(name="COCOMaskEvaluator")
class COCOMaskEvaluator:
    def __init__(self, records, meta, output_dir=None, max_dets=100):
        self._records = {r["image_id"]: r for r in records}
        self._num_classes = len(meta["thing_classes"])
        self._output_dir = output_dir
        self._max_dets = max_dets
        self._iou_thrs = np.linspace(0.5, 0.95, 10)
        self._rec_thrs = np.linspace(0.0, 1.0, 101)
        self._preds = []

    def reset(self):
        self._preds = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            h, w = inp["height"], inp["width"]
            if len(out["scores"]) == 0:
                continue
            masks = F.interpolate(out["masks"].float(), size=(h, w), mode="bilinear", align_corners=False)
            rles = _encode((masks[:, 0] > 0.5).cpu().numpy())
            for rle, label, score in zip(rles, out["labels"].tolist(), out["scores"].tolist()):
                self._preds.append({"image_id": inp["image_id"], "category_id": label - 1,
                                    "score": score, "segmentation": rle})

    def _ground_truth(self):
        gts = defaultdict(list)
        for img_id, rec in self._records.items():
            for ann in rec["annotations"]:
                polys = mask_util.frPyObjects(ann["segmentation"], rec["height"], rec["width"])
                gts[img_id, ann["category_id"]].append(mask_util.merge(polys))
        return gts

    def evaluate(self):
        preds = list(itertools.chain(*all_gather(self._preds)))
        if not is_main_process():
            return {}
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            with open(os.path.join(self._output_dir, "instances_predictions.pkl"), "wb") as f:
                _serializer.dump(preds, f)
        return {"segm": self.score(preds)}

    def score(self, preds):
        gts = self._ground_truth()
        present = defaultdict(set)
        for img_id, cat in gts:
            present[img_id].add(cat)
        preds = [p for p in preds if p["category_id"] in present[p["image_id"]]]  # todoruleid: family 5 (missed)
        dts = defaultdict(list)
        for p in preds:
            dts[p["image_id"], p["category_id"]].append(p)

        T, R, K = len(self._iou_thrs), len(self._rec_thrs), self._num_classes
        precision = -np.ones((T, R, K))
        for k in range(K):
            scores, matched, npos = [], [[] for _ in range(T)], 0
            for img_id in self._records:
                g = gts.get((img_id, k), [])
                d = sorted(dts.get((img_id, k), []), key=lambda x: -x["score"])[: self._max_dets]
                npos += len(g)
                if not d:
                    continue
                scores.extend(x["score"] for x in d)
                ious = mask_util.iou([x["segmentation"] for x in d], g, [0] * len(g)) if g else np.zeros((len(d), 0))
                for t, thr in enumerate(self._iou_thrs):
                    taken = np.zeros(len(g), dtype=bool)
                    for i in range(len(d)):
                        cand = np.where(~taken & (ious[i] >= thr))[0] if len(g) else []
                        if len(cand):
                            taken[cand[np.argmax(ious[i, cand])]] = True
                        matched[t].append(bool(len(cand)))
            if npos == 0:
                continue
            order = np.argsort(-np.asarray(scores), kind="mergesort")
            for t in range(T):
                tp = np.asarray(matched[t], dtype=float)[order]
                tp_sum, fp_sum = np.cumsum(tp), np.cumsum(1 - tp)
                rc = tp_sum / npos
                pr = tp_sum / np.maximum(tp_sum + fp_sum, np.finfo(float).eps)
                pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
                idx = np.searchsorted(rc, self._rec_thrs, side="left")
                q = np.zeros(R)
                ok = idx < len(pr)
                q[ok] = pr[idx[ok]]
                precision[t, :, k] = q

        results = {"AP": _mean_valid(precision), "AP50": _mean_valid(precision[0]),
                   "AP75": _mean_valid(precision[5])}
        logger.info("Mask AP: %s", ", ".join(f"{k}={v:.2f}" for k, v in results.items()))
        return results


@torch.no_grad()
def inference_on_dataset(model, loader, evaluator):
    evaluator.reset()
    was_training = model.training
    model.eval()
    for inputs in loader:
        outputs = model(inputs)
        evaluator.process(inputs, outputs)
    model.train(was_training)
    return evaluator.evaluate()
