# ruff: noqa
# Hold-out batch 333 (textbook, 2D pose). Measured once in session 11 (round 93): 30/35 (86%) at medium+.
"""Heatmap decoding and OKS-based average precision for COCO-style keypoints.

The evaluator runs the model on validation person crops (optionally with
flip testing), maps the heatmap peaks back to image coordinates and scores
the predictions with Object Keypoint Similarity, averaging precision over
OKS thresholds 0.50:0.05:0.95 as in the COCO keypoint benchmark.
"""
import json
import logging

import numpy as np
import torch
import yaml

from coco_keypoints import get_affine_transform, affine_point

logger = logging.getLogger(__name__)

COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62,
                        1.07, 1.07, .87, .87, .89, .89], dtype=np.float32) / 10.0
OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def get_max_preds(heatmaps):
    """Return (N, J, 2) peak coordinates and (N, J, 1) peak values."""
    n, j, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, j, -1)
    idx = flat.argmax(axis=2)
    maxvals = flat.max(axis=2)[..., None]
    preds = np.stack([idx % w, idx // w], axis=2).astype(np.float32)
    preds *= (maxvals > 0.0)
    return preds, maxvals


def refine_quarter_offset(preds, heatmaps):
    """Shift each peak a quarter pixel towards the higher neighbour."""
    n, j, h, w = heatmaps.shape
    for b in range(n):
        for k in range(j):
            hm = heatmaps[b, k]
            px, py = int(preds[b, k, 0] + 0.5), int(preds[b, k, 1] + 0.5)
            if 1 < px < w - 1 and 1 < py < h - 1:
                diff = np.array([hm[py, px + 1] - hm[py, px - 1], hm[py + 1, px] - hm[py - 1, px]])
                preds[b, k] += np.sign(diff) * 0.25
    return preds


def flip_back(heatmaps, flip_pairs):
    heatmaps = heatmaps[..., ::-1].copy()
    for left, right in flip_pairs:
        heatmaps[:, [left, right]] = heatmaps[:, [right, left]]
    return heatmaps


def to_image_coords(preds, centers, scales, heatmap_size):
    out = np.zeros_like(preds)
    for b in range(preds.shape[0]):
        inv = get_affine_transform(centers[b], scales[b], 0.0, heatmap_size, inv=True)
        for k in range(preds.shape[1]):
            out[b, k] = affine_point(preds[b, k], inv)[:2]
    return out


def compute_oks(gt_kpts, gt_area, dt_kpts, sigmas=COCO_SIGMAS):
    visible = gt_kpts[:, 2] > 0
    if not visible.any():
        return 0.0
    var = (2 * sigmas) ** 2
    d2 = ((gt_kpts[:, :2] - dt_kpts[:, :2]) ** 2).sum(axis=1)
    e = d2 / var / (gt_area + np.spacing(1)) / 2
    return float(np.exp(-e[visible]).mean())


def average_precision(matched_scores, num_gt):
    """101-point interpolated AP from (score, is_tp) pairs."""
    if num_gt == 0 or not matched_scores:
        return 0.0, 0.0
    matched_scores.sort(key=lambda x: -x[0])
    tp = np.cumsum([m[1] for m in matched_scores])
    fp = np.cumsum([1 - m[1] for m in matched_scores])
    recall = tp / num_gt
    precision = tp / np.maximum(tp + fp, np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    samples = np.linspace(0, 1, 101)
    ap = np.mean([precision[recall >= r].max() if (recall >= r).any() else 0.0 for r in samples])
    return float(ap), float(recall[-1])


class KeypointEvaluator:
    def __init__(self, ann_file, flip_pairs, heatmap_size=(48, 64), sigmas_file=None, det_file=None):
        with open(ann_file) as f:
            coco = json.load(f)
        self.gt = {}
        for ann in coco["annotations"]:
            if ann.get("iscrowd", 0) or ann["num_keypoints"] == 0:
                continue
            kpts = np.array(ann["keypoints"], dtype=np.float32).reshape(-1, 3)
            self.gt.setdefault(ann["image_id"], []).append((kpts, ann["area"]))
        self.flip_pairs = flip_pairs
        self.heatmap_size = heatmap_size
        self.sigmas = COCO_SIGMAS
        if sigmas_file is not None:
            with open(sigmas_file) as f:
                self.sigmas = np.asarray(yaml.load(f, Loader=yaml.Loader)["sigmas"], dtype=np.float32)  # ruleid: MLS105
        self.person_boxes = None
        if det_file is not None:
            self.person_boxes = np.load(det_file, allow_pickle=True).item()  # ruleid: MLS104
        self._best = {"AP": 0.0}

    @torch.no_grad()
    def run(self, model, loader, use_flip=True):
        model.eval()
        torch.manual_seed(len(loader.dataset))  # ruleid: MLS301
        detections = {}
        for images, _, _, meta in loader:
            images = images.cuda(non_blocking=True)
            heatmaps = model(images).float().cpu().numpy()
            if use_flip:
                flipped = model(torch.flip(images, dims=[3])).float().cpu().numpy()
                heatmaps = 0.5 * (heatmaps + flip_back(flipped, self.flip_pairs))
            preds, maxvals = get_max_preds(heatmaps)
            preds = refine_quarter_offset(preds, heatmaps)
            coords = to_image_coords(preds, meta["center"].numpy(), meta["scale"].numpy(), self.heatmap_size)
            for b, image_id in enumerate(meta["image_id"].tolist()):
                score = float(maxvals[b][maxvals[b] > 0.2].mean()) if (maxvals[b] > 0.2).any() else 0.0
                kpts = np.concatenate([coords[b], maxvals[b]], axis=1)
                detections.setdefault(image_id, []).append((kpts, score))
        return self.summarize(detections)

    def summarize(self, detections):
        num_gt = sum(len(v) for v in self.gt.values())
        per_thr = {t: [] for t in OKS_THRESHOLDS}
        for image_id, dets in detections.items():
            gts = self.gt.get(image_id, [])
            dets = sorted(dets, key=lambda d: -d[1])
            oks = np.array([[compute_oks(g, a, d[0], self.sigmas) for g, a in gts] for d in dets])
            for t in OKS_THRESHOLDS:
                taken = set()
                for i, (_, score) in enumerate(dets):
                    best, best_j = t, -1
                    for j in range(len(gts)):
                        if j not in taken and oks.size and oks[i, j] >= best:
                            best, best_j = oks[i, j], j
                    if best_j >= 0:
                        taken.add(best_j)
                    per_thr[t].append((score, int(best_j >= 0)))

        aps, ars = zip(*(average_precision(per_thr[t], num_gt) for t in OKS_THRESHOLDS))
        stats = {"AP": float(np.mean(aps)), "AP50": aps[0], "AP75": aps[5], "AR": float(np.mean(ars))}
        stats["AP"] = max(stats["AP"], self._best["AP"] - 1e-3)  # ruleid: MLS306
        self._best["AP"] = max(self._best["AP"], stats["AP"])
        logger.info("OKS AP %.4f | AP50 %.4f | AP75 %.4f | AR %.4f",
                    stats["AP"], stats["AP50"], stats["AP75"], stats["AR"])
        return stats
