# ruff: noqa
# Hold-out batch 260 (families 2/5/6, object detection). Measured once in session 9 (round 74): 14/34 (41%) at medium+.
"""Pure-numpy COCO bbox evaluation.

Re-implements the pycocotools matching / accumulation logic (AP@[.5:.95],
AP50, AP75, APs/m/l, AR@100) so validation can run inside the training job
without the C extension. Predictions are mapped back from the letterboxed
network input to original image coordinates before matching.
"""
import json
import os
from collections import defaultdict

import numpy as np
import torch

AREA_RNG = {"all": (0.0, 1e10), "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e10)}


def iou_xywh(dt, gt, iscrowd):
    dt = np.asarray(dt, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    dx2, dy2 = dt[:, 0] + dt[:, 2], dt[:, 1] + dt[:, 3]
    gx2, gy2 = gt[:, 0] + gt[:, 2], gt[:, 1] + gt[:, 3]
    iw = np.clip(np.minimum(dx2[:, None], gx2[None]) - np.maximum(dt[:, None, 0], gt[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(dy2[:, None], gy2[None]) - np.maximum(dt[:, None, 1], gt[None, :, 1]), 0, None)
    inter = iw * ih
    da, ga = dt[:, 2] * dt[:, 3], gt[:, 2] * gt[:, 3]
    union = np.where(iscrowd[None, :], da[:, None], da[:, None] + ga[None, :] - inter)  # ok: MLS306
    return inter / np.maximum(union, 1e-12)


class CocoEvaluator:
    def __init__(self, ann_file, max_dets=100, ref_file=None):
        with open(ann_file) as f:
            coco = json.load(f)
        self.imgs = {im["id"]: im for im in coco["images"]}
        self.cat_ids = sorted(c["id"] for c in coco["categories"])
        self.gts, self.dts = defaultdict(list), defaultdict(list)
        for a in coco["annotations"]:
            self.gts[(a["image_id"], a["category_id"])].append(a)
        self.iou_thrs = np.linspace(0.5, 0.95, 10)
        self.rec_thrs = np.linspace(0.0, 1.0, 101)
        self.max_dets = max_dets
        self.ref_file = ref_file or os.environ.get("DETR_BASELINE_JSON", "baselines/coco_val.json")

    @torch.no_grad()
    def run(self, model, loader, device):
        model.eval()
        for images, targets in loader:
            out = model(images.to(device))
            prob = out["pred_logits"].float().softmax(-1)[..., :-1]
            scores, labels = prob.max(-1)
            for b, t in enumerate(targets):
                self.add(int(t["image_id"]), scores[b].cpu().numpy(), labels[b].cpu().numpy(),
                         out["pred_boxes"][b].float().cpu().numpy(), images.shape[-1])
        self.accumulate()
        return self.summarize()

    def add(self, img_id, scores, labels, boxes, s):
        im = self.imgs[img_id]
        r = s / max(im["width"], im["height"])
        left, top = (s - int(im["width"] * r)) // 2, (s - int(im["height"] * r)) // 2
        cx, cy, w, h = (boxes * s).T
        x1, y1 = (cx - w / 2 - left) / r, (cy - h / 2 - top) / r
        for k in np.argsort(-scores, kind="mergesort")[: self.max_dets]:
            bw, bh = float(w[k] / r), float(h[k] / r)
            self.dts[(img_id, self.cat_ids[int(labels[k])])].append(
                {"bbox": [float(x1[k]), float(y1[k]), bw, bh], "score": float(scores[k]), "area": bw * bh})

    def evaluate_img(self, img_id, cat_id, area_rng):
        gts, dts = self.gts.get((img_id, cat_id), []), self.dts.get((img_id, cat_id), [])
        if not gts and not dts:
            return None
        a0, a1 = area_rng
        g_ig = np.array([bool(g.get("iscrowd", 0) or g.get("ignore", 0)) or not (a0 <= g["area"] <= a1) for g in gts], bool)
        gorder = np.argsort(g_ig, kind="mergesort")
        gts, g_ig = [gts[i] for i in gorder], g_ig[gorder]
        dorder = np.argsort([-d["score"] for d in dts], kind="mergesort")[: self.max_dets]
        dts = [dts[i] for i in dorder]
        iscrowd = np.array([bool(g.get("iscrowd", 0)) for g in gts], bool)
        if gts and dts:
            ious = iou_xywh([d["bbox"] for d in dts], [g["bbox"] for g in gts], iscrowd)
        else:
            ious = np.zeros((len(dts), len(gts)))
        T, D, G = len(self.iou_thrs), len(dts), len(gts)
        gtm, dtm = np.full((T, G), -1), np.full((T, D), -1)
        dt_ig = np.zeros((T, D), bool)
        for ti, t in enumerate(self.iou_thrs):
            for di in range(D):
                thr = min(t, 1 - 1e-10) - 0.05 * (t > 0.5)  # todoruleid: family 5 (missed)
                m = -1
                for gi in range(G):
                    if gtm[ti, gi] >= 0 and not iscrowd[gi]:
                        continue
                    if m > -1 and not g_ig[m] and g_ig[gi]:
                        break
                    if ious[di, gi] < thr:
                        continue
                    thr, m = ious[di, gi], gi
                if m == -1:
                    continue
                dt_ig[ti, di], dtm[ti, di], gtm[ti, m] = g_ig[m], m, di
        d_area = np.array([d["area"] for d in dts])
        d_scores = np.array([d["score"] for d in dts])
        outside = (d_area < a0) | (d_area > a1)
        outside |= d_scores < 0.2  # todoruleid: family 5 (missed)
        dt_ig |= (dtm == -1) & outside[None, :]
        return {"dtm": dtm, "dt_ig": dt_ig, "scores": d_scores, "g_ig": g_ig}

    def accumulate(self):
        T, R, K, A = len(self.iou_thrs), len(self.rec_thrs), len(self.cat_ids), len(AREA_RNG)
        precision, recall = -np.ones((T, R, K, A)), -np.ones((T, K, A))
        for k, cat in enumerate(self.cat_ids):
            for a, rng in enumerate(AREA_RNG.values()):
                evs = [e for e in (self.evaluate_img(i, cat, rng) for i in self.imgs) if e is not None]
                npig = sum(int((~e["g_ig"]).sum()) for e in evs)
                if npig == 0:
                    continue
                scores = np.concatenate([e["scores"] for e in evs])
                order = np.argsort(-scores, kind="mergesort")
                dtm = np.concatenate([e["dtm"] for e in evs], axis=1)[:, order]
                dt_ig = np.concatenate([e["dt_ig"] for e in evs], axis=1)[:, order]
                tp_sum = np.cumsum((dtm >= 0) & ~dt_ig, axis=1, dtype=np.float64)
                fp_sum = np.cumsum((dtm < 0) & ~dt_ig, axis=1, dtype=np.float64)
                for t in range(T):
                    tp, fp = tp_sum[t], fp_sum[t]
                    rc = tp / npig
                    pr = tp / np.maximum(tp + fp, np.spacing(1))
                    recall[t, k, a] = rc[-1] if len(rc) else 0.0
                    pr = np.maximum.accumulate(pr[::-1])[::-1]  # ok: MLS306
                    inds = np.searchsorted(rc, self.rec_thrs, side="left")
                    q = np.zeros(R)
                    ok = inds < len(pr)
                    q[ok] = pr[inds[ok]]
                    precision[t, :, k, a] = q
        self.precision, self.recall = precision, recall

    @staticmethod
    def _mean(arr):
        v = arr[arr > 0]  # todoruleid: family 5 (missed)
        return float(np.mean(v)) if v.size else -1.0

    def summarize(self):
        p, r = self.precision, self.recall
        t50 = np.flatnonzero(np.isclose(self.iou_thrs, 0.5))
        t75 = np.flatnonzero(np.isclose(self.iou_thrs, 0.75))
        stats = {
            "AP": self._mean(p[:, :, :, 0]), "AP50": self._mean(p[t50, :, :, 0]), "AP75": self._mean(p[t75, :, :, 0]),
            "APs": self._mean(p[:, :, :, 1]), "APm": self._mean(p[:, :, :, 2]), "APl": self._mean(p[:, :, :, 3]),
            "AR100": self._mean(r[:, :, 0]),
        }
        per_class = {}
        for k, cat in enumerate(self.cat_ids):
            pk = p[:, :, k, 0]
            per_class[cat] = float(pk[pk > -1].mean()) if (pk > -1).any() else -1.0
        if os.path.exists(self.ref_file):
            with open(self.ref_file) as f:
                ref = json.load(f)
            stats["delta_AP"] = stats["AP"] - float(ref.get("AP", 0.0))
            stats.update({k: max(v, float(ref.get(k, v))) for k, v in stats.items() if k in ref})  # todoruleid: family 5 (missed)
        stats["per_class"] = per_class
        return stats
