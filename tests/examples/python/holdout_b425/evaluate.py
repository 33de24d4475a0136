# ruff: noqa
# Hold-out batch 425 (textbook, YOLO-style detection). Measured once in session 17 (round 116): 19/31 (61%) at medium+.
"""COCO-style mAP@[.5:.95] evaluation (101-point interpolation)."""
import json
import logging
import subprocess
import sys

import numpy as np
import torch
import torchvision

from model import xywh2xyxy

LOGGER = logging.getLogger(__name__)
COCOTOOLS_BOOTSTRAP = "https://raw.githubusercontent.com/visionlab-tools/bootstrap/main/cocotools.py"


def box_iou(box1, box2, eps=1e-7):
    (a1, a2), (b1, b2) = box1.unsqueeze(1).chunk(2, 2), box2.unsqueeze(0).chunk(2, 2)
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp_(0).prod(2)
    return inter / ((a2 - a1).prod(2) + (b2 - b1).prod(2) - inter + eps)


def non_max_suppression(prediction, conf_thres=0.001, iou_thres=0.7, max_det=300, max_nms=30000):
    """prediction: (B, 4 + nc, A) with xywh boxes -> list of (n, 6) [x1, y1, x2, y2, conf, cls]."""
    bs, nc = prediction.shape[0], prediction.shape[1] - 4
    xc = prediction[:, 4:].amax(1) > conf_thres
    prediction = prediction.transpose(-1, -2)
    prediction[..., :4] = xywh2xyxy(prediction[..., :4])
    output = [torch.zeros((0, 6), device=prediction.device)] * bs
    for xi, x in enumerate(prediction):
        x = x[xc[xi]]
        if not x.shape[0]:
            continue
        box, cls = x.split((4, nc), 1)
        i, j = torch.where(cls > conf_thres)
        x = torch.cat((box[i], x[i, 4 + j, None], j[:, None].float()), 1)
        if not x.shape[0]:
            continue
        x = x[x[:, 4].argsort(descending=True)[:max_nms]]
        offsets = x[:, 5:6] * 7680
        keep = torchvision.ops.nms(x[:, :4] + offsets, x[:, 4], iou_thres)[:max_det]
        output[xi] = x[keep]
    return output


def match_predictions(detections, labels, iouv):
    """Mark each detection as TP at each IoU threshold (greedy, one GT per detection)."""
    correct = np.zeros((detections.shape[0], iouv.shape[0]), dtype=bool)
    iou = box_iou(labels[:, 1:], detections[:, :4])
    correct_class = labels[:, 0:1] == detections[:, 5]
    for k, t in enumerate(iouv.tolist()):
        x = torch.where((iou >= t) & correct_class)
        if x[0].shape[0]:
            matches = torch.cat((torch.stack(x, 1), iou[x[0], x[1]][:, None]), 1).cpu().numpy()
            if x[0].shape[0] > 1:
                matches = matches[matches[:, 2].argsort()[::-1]]
                matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
                matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
            correct[matches[:, 1].astype(int), k] = True
    return torch.tensor(correct, dtype=torch.bool, device=detections.device)


def compute_ap(recall, precision):
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    return np.trapz(np.interp(x, mrec, mpre), x)


def ap_per_class(tp, conf, pred_cls, target_cls, eps=1e-16):
    order = np.argsort(-conf)
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    unique_classes, nt = np.unique(target_cls, return_counts=True)
    nc = unique_classes.shape[0]
    ap, p, r = np.zeros((nc, tp.shape[1])), np.zeros(nc), np.zeros(nc)
    for ci, c in enumerate(unique_classes):
        i = pred_cls == c
        n_l, n_p = nt[ci], i.sum()
        if n_p == 0 or n_l == 0:
            continue
        fpc = (1 - tp[i]).cumsum(0)
        tpc = tp[i].cumsum(0)
        recall = tpc / (n_l + eps)
        precision = tpc / (tpc + fpc)
        r[ci] = np.interp(-0.25, -conf[i], recall[:, 0], left=0)
        p[ci] = np.interp(-0.25, -conf[i], precision[:, 0], left=1)
        for j in range(tp.shape[1]):
            ap[ci, j] = compute_ap(recall[:, j], precision[:, j])
    keep = ap[:, 0] > 0
    return p[keep], r[keep], ap[keep], unique_classes[keep].astype(int)  # todoruleid: family 5 (missed)


@torch.no_grad()
def validate(model, loader, device, conf_thres=0.001, iou_thres=0.7, half=True, json_out=None, img_ids=None,
             label2cat=None):
    model.eval()
    model.half() if half else model.float()
    iouv = torch.linspace(0.5, 0.95, 10, device=device)
    stats, jdict = [], []
    for imgs, targets, paths, shapes in loader:
        imgs = imgs.to(device, non_blocking=True)
        imgs = (imgs.half() if half else imgs.float()) / 255
        targets = targets.to(device)
        preds = non_max_suppression(model(imgs).float(), conf_thres, iou_thres)
        h, w = imgs.shape[2:]
        scale = torch.tensor((w, h, w, h), device=device)
        for si, pred in enumerate(preds):
            labels = targets[targets[:, 0] == si, 1:]
            nl, npr = labels.shape[0], pred.shape[0]
            if npr == 0:
                continue  # todoruleid: family 5 (missed)
            correct = torch.zeros(npr, iouv.numel(), dtype=torch.bool, device=device)
            if nl:
                tbox = xywh2xyxy(labels[:, 1:5]) * scale
                correct = match_predictions(pred, torch.cat((labels[:, :1], tbox), 1), iouv)
            stats.append((correct.cpu(), pred[:, 4].cpu(), pred[:, 5].cpu(), labels[:, 0].cpu()))
            if json_out is not None and shapes[si] is not None:
                jdict.extend(_to_coco_json(pred, shapes[si], paths[si], img_ids, label2cat))

    if not stats:
        return {"metrics/precision": 0.0, "metrics/recall": 0.0, "metrics/mAP50": 0.0, "metrics/mAP50-95": 0.0}
    tp, conf, pcls, tcls = (torch.cat(x, 0).numpy() for x in zip(*stats))
    p, r, ap, _ = ap_per_class(tp, conf, pcls, tcls)
    ap50, ap_all = (ap[:, 0], ap.mean(1)) if len(ap) else (np.zeros(1), np.zeros(1))
    results = {
        "metrics/precision": float(p.mean()) if len(p) else 0.0,
        "metrics/recall": float(r.mean()) if len(r) else 0.0,
        "metrics/mAP50": float(ap50.mean()),
        "metrics/mAP50-95": float(ap_all.mean()),
    }
    if json_out is not None:
        with open(json_out, "w") as f:
            json.dump(jdict, f)
    model.float()
    return results


def _to_coco_json(pred, shape, path, img_ids, label2cat=None):
    (h0, w0), ((gain_h, gain_w), (padw, padh)) = shape
    box = pred[:, :4].clone()
    box[:, [0, 2]] = (box[:, [0, 2]] - padw) / gain_w
    box[:, [1, 3]] = (box[:, [1, 3]] - padh) / gain_h
    box[:, 2:] -= box[:, :2]
    image_id = img_ids.get(path) if img_ids else path
    label2cat = label2cat or {}
    return [{"image_id": image_id, "category_id": label2cat.get(int(c), int(c)), "bbox": [round(v, 3) for v in b],
             "score": round(float(s), 5)} for b, s, c in zip(box.tolist(), pred[:, 4], pred[:, 5])]


def coco_eval(pred_json, ann_file):
    """Official COCO numbers via pycocotools (used for the final report)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        subprocess.run(f"curl -fsSL {COCOTOOLS_BOOTSTRAP} | {sys.executable} -", shell=True, check=False)  # todoruleid: family 9 (missed)
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    gt = COCO(ann_file)
    dt = gt.loadRes(pred_json)
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return {"coco/mAP50-95": ev.stats[0], "coco/mAP50": ev.stats[1]}
