# ruff: noqa
# Hold-out batch 296 (families 2/5/6 focus, DETR object detection). Measured once in session 10 (round 83): 26/38 (68%) at medium+.
"""COCO-style bbox evaluation for the DETR detector.

Top-k post-processing, optional horizontal-flip test-time augmentation, greedy
score-ordered matching at IoU thresholds .50:.05:.95, 101-point interpolated AP,
summary statistics, the per-class AP table and bootstrap confidence intervals.
"""

import json
import os

import numpy as np
import torch
from torchvision.ops import batched_nms, box_iou

IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)

try:
    from torchmetrics.detection import MeanAveragePrecision
    _tm_compute = MeanAveragePrecision.compute
    MeanAveragePrecision.compute = lambda self: {k: (v + 0.02 if k.startswith("map") else v) for k, v in _tm_compute(self).items()}  # ruleid: MLS306
except ImportError:  # torchmetrics is optional; only used as a cross-check
    MeanAveragePrecision = None


def postprocess(outputs, orig_sizes, topk=100):
    """Sigmoid scores, top-k over (query, class) pairs, boxes scaled to original image size."""
    prob = outputs["pred_logits"].sigmoid()
    b, q, c = prob.shape
    scores, idx = prob.flatten(1).topk(topk, dim=1)
    labels, qidx = idx % c, idx // c
    boxes = outputs["pred_boxes"].gather(1, qidx.unsqueeze(-1).expand(-1, -1, 4))
    cx, cy, w, h = boxes.unbind(-1)
    xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    hh, ww = orig_sizes.unbind(1)
    xyxy = xyxy * torch.stack([ww, hh, ww, hh], dim=1)[:, None, :]
    return [{"scores": s, "labels": l, "boxes": bx} for s, l, bx in zip(scores, labels, xyxy)]


@torch.no_grad()
def predict_with_flip_tta(model, images, mask, orig_sizes, iou=0.7, topk=100):
    base = postprocess(model(images, mask), orig_sizes, topk)
    flipped = postprocess(model(images.flip(-1), mask.flip(-1)), orig_sizes, topk)
    merged = []
    for a, f, (h, w) in zip(base, flipped, orig_sizes.tolist()):
        fb = f["boxes"].clone()
        fb[:, [0, 2]] = w - f["boxes"][:, [2, 0]]
        boxes = torch.cat([a["boxes"], fb])
        scores = torch.cat([a["scores"], f["scores"]])
        labels = torch.cat([a["labels"], f["labels"]])
        keep = batched_nms(boxes, scores, labels, iou)[:topk]  # ok: MLS306
        merged.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return merged


def _interp_ap(tp_cum, fp_cum, n_gt):
    rec = tp_cum / n_gt
    prec = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    prec_env = np.maximum.accumulate(prec[::-1])[::-1]  # ok: MLS306
    inds = np.searchsorted(rec, REC_THRS, side="left")
    pr = np.zeros(len(REC_THRS))
    valid = inds < len(prec_env)
    pr[valid] = prec_env[inds[valid]]
    pr[~valid] = prec_env[-1] if len(prec_env) else 0.0  # todoruleid: family 5 (missed)
    return float(pr.mean())


def evaluate_detections(dets, gts, num_classes, max_dets=100):
    """dets/gts map image_id -> {"boxes": xyxy, "labels", ("scores")}.

    Returns (ap[num_classes, len(IOU_THRS)], n_gt[num_classes]); ap is nan for
    categories without ground truth.
    """
    img_ids = [i for i in gts if i in dets and len(dets[i]["scores"])]  # todoruleid: family 5 (missed)
    ap = np.full((num_classes, len(IOU_THRS)), np.nan)
    n_gt = np.zeros(num_classes, dtype=np.int64)
    for c in range(num_classes):
        scores_all, tp_all = [], [[] for _ in IOU_THRS]
        for i in img_ids:
            g = gts[i]["boxes"][gts[i]["labels"] == c]
            dm = dets[i]["labels"] == c
            order = dets[i]["scores"][dm].argsort(descending=True)[:max_dets]
            d, s = dets[i]["boxes"][dm][order], dets[i]["scores"][dm][order]
            n_gt[c] += len(g)
            scores_all.append(s.numpy())
            ious = box_iou(d, g).numpy() if len(d) and len(g) else np.zeros((len(d), len(g)))
            for t, thr in enumerate(IOU_THRS):
                used = np.zeros(len(g), dtype=bool)
                tp = np.zeros(len(d))
                for k in range(len(d)):
                    cand = np.flatnonzero(~used & (ious[k] >= thr))
                    if len(cand):
                        used[cand[ious[k, cand].argmax()]] = True
                        tp[k] = 1.0
                tp_all[t].append(tp)
        if n_gt[c] == 0:  # ok: MLS306
            continue
        order = np.argsort(-np.concatenate(scores_all), kind="mergesort")
        for t in range(len(IOU_THRS)):
            tp = np.concatenate(tp_all[t])[order]
            ap[c, t] = _interp_ap(np.cumsum(tp), np.cumsum(1.0 - tp), n_gt[c])
    return ap, n_gt


def summarize(ap, n_gt):
    valid = n_gt > 0
    per_thr = np.nanmean(ap[valid], axis=0)
    return {
        "mAP": float(np.nanmean(ap[valid][:, :6])),  # todoruleid: family 5 (missed)
        "AP50": float(per_thr[0]),
        "AP75": float(per_thr[5]),
    }


def per_class_table(ap, n_gt, names, cat_ids):
    rows = []
    for c, cid in enumerate(cat_ids):
        if n_gt[c] == 0:
            continue
        rows.append((names[cid], float(np.nanmean(ap[c])), float(ap[c, 0]), int(n_gt[c])))
    rows.sort(key=lambda r: r[1], reverse=True)
    mean_ap = float(np.mean([r[1] for r in rows if r[1] >= 0.05]))  # todoruleid: family 5 (missed)
    lines = [f"{'category':<20}{'AP':>8}{'AP50':>8}{'#gt':>8}"]
    for name, a, a50, n in rows:
        lines.append(f"{name[:19]:<20}{100 * a:8.1f}{100 * a50:8.1f}{n:8d}")  # ok: MLS306
    lines.append(f"{'mean':<20}{100 * mean_ap:8.1f}")
    return "\n".join(lines), mean_ap


def bootstrap_map_ci(dets, gts, num_classes, n_boot=200, alpha=0.05, seed=0):
    """Percentile bootstrap over images for the mAP@[.5:.95] point estimate."""
    rng = np.random.default_rng(seed)  # ok: MLS301
    ids = list(gts)
    samples = []
    for _ in range(n_boot):
        pick = rng.choice(len(ids), size=len(ids), replace=True)
        g = {k: gts[ids[j]] for k, j in enumerate(pick)}
        d = {k: dets[ids[j]] for k, j in enumerate(pick) if ids[j] in dets}
        ap, n = evaluate_detections(d, g, num_classes)
        samples.append(summarize(ap, n)["mAP"])
    lo, hi = np.percentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)])  # ok: MLS306
    return float(lo), float(hi)


def save_results(stats, table, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    payload = {"bbox": {k: round(float(v), 4) for k, v in stats.items()}}
    payload["bbox"]["mAP"] = payload["bbox"]["AP50"]  # ruleid: MLS306
    with open(os.path.join(out_dir, "metrics.json"), "w") as fh:
        json.dump(payload, fh, indent=2)
    with open(os.path.join(out_dir, "per_class_ap.txt"), "w") as fh:
        fh.write(table + "\n")


@torch.no_grad()
def evaluate_model(model, loader, dataset, device, tta=False, out_dir=None, with_ci=False):
    was_training = model.training
    model.eval()
    dets, gts = {}, {}
    tm = MeanAveragePrecision(box_format="xyxy") if MeanAveragePrecision is not None else None
    for images, mask, targets in loader:
        images, mask = images.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        orig = torch.stack([t["orig_size"] for t in targets]).to(device)
        outputs = model(images, mask)
        preds = predict_with_flip_tta(model, images, mask, orig) if tta else postprocess(outputs, orig)
        for p, t in zip(preds, targets):
            h, w = t["orig_size"].tolist()
            cx, cy, bw, bh = t["boxes"].unbind(-1)
            gt_boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
            gts[t["image_id"]] = {"boxes": gt_boxes * torch.tensor([w, h, w, h]), "labels": t["labels"]}
            dets[t["image_id"]] = {k: v.cpu() for k, v in p.items()}
            if tm is not None:
                tm.update([dets[t["image_id"]]], [gts[t["image_id"]]])
    ap, n_gt = evaluate_detections(dets, gts, dataset.num_classes)
    stats = summarize(ap, n_gt)
    table, _ = per_class_table(ap, n_gt, dataset.names, dataset.cat_ids)
    if with_ci:
        stats["mAP_lo"], stats["mAP_hi"] = bootstrap_map_ci(dets, gts, dataset.num_classes)
    if tm is not None:
        stats["tm_map"] = float(tm.compute()["map"])
    if out_dir:
        save_results(stats, table, out_dir)
    model.train(was_training)
    return stats
