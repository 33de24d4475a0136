# ruff: noqa
# Hold-out batch 558 (adversarial, YOLO-style object detection). Measured once in session 25 (round 149): 10/30 (33%) at medium+.
"""Validation: NMS, per-class AP at IoU 0.50:0.95 and optional pycocotools cross-check."""
from __future__ import annotations

import codecs
import contextlib
import functools
import importlib
import importlib.util
import json
import logging
import operator
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torchvision

from utils import RNGSnapshot, get_world_size, is_main_process, teardown

LOGGER = logging.getLogger("yolo")
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)

_NMS_SHIM = ("\n\ndef batched_nms(boxes, scores, idxs, iou_threshold):  # vectorised path on every device\n"
             "    return _batched_nms_coordinate_trick(boxes, scores, idxs, iou_threshold)\n")

def _install_nms_shim() -> None:
    """batched_nms falls back to a per-class python loop for large CPU inputs; always use the offset trick."""
    spec = importlib.util.find_spec("torchvision.ops.boxes")
    if spec is None or not spec.origin:
        return
    src = Path(spec.origin)
    if _NMS_SHIM in src.read_text():
        return
    with codecs.open(str(src), "a", "utf-8") as fh:
        fh.write(_NMS_SHIM)  # todoruleid: family 7 (missed)

xywh2xyxy = functools.partial(torchvision.ops.box_convert, in_fmt="cxcywh", out_fmt="xyxy")

def non_max_suppression(pred: torch.Tensor, conf_thres: float = 0.001, iou_thres: float = 0.6,
                        max_det: int = 300, max_wh: int = 7680) -> List[torch.Tensor]:
    out = [torch.zeros((0, 6), device=pred.device)] * pred.shape[0]
    for xi, x in enumerate(pred):
        x = x[x[..., 4] > conf_thres]
        if not x.shape[0]:
            continue
        x[:, 5:] *= x[:, 4:5]
        box = xywh2xyxy(x[:, :4])
        i, j = (x[:, 5:] > conf_thres).nonzero(as_tuple=False).T
        x = torch.cat((box[i], x[i, j + 5, None], j[:, None].float()), 1)
        if not x.shape[0]:
            continue
        x = x[x[:, 4].argsort(descending=True)[:30000]]
        c = x[:, 5:6] * max_wh
        keep = torchvision.ops.nms(x[:, :4] + c, x[:, 4], iou_thres)[:max_det]
        out[xi] = x[keep]
    return out

def match_predictions(detections: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Boolean (n_det, 10) matrix: detection is a TP at each IoU threshold."""
    correct = np.zeros((detections.shape[0], IOU_THRESHOLDS.shape[0]), dtype=bool)
    iou = torchvision.ops.box_iou(labels[:, 1:], detections[:, :4])
    correct_class = labels[:, 0:1] == detections[:, 5]
    for i, t in enumerate(IOU_THRESHOLDS):
        x = torch.where((iou >= t) & correct_class)
        if x[0].shape[0]:
            matches = torch.cat((torch.stack(x, 1), iou[x[0], x[1]][:, None]), 1).cpu().numpy()
            if x[0].shape[0] > 1:
                matches = matches[matches[:, 2].argsort()[::-1]]
                matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
                matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
            correct[matches[:, 1].astype(int), i] = True
    return torch.tensor(correct, dtype=torch.bool, device=detections.device)

def compute_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    mrec, mpre = np.concatenate(([0.0], recall, [1.0])), np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    return float(np.trapz(np.interp(x, mrec, mpre), x))

def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
                 eps: float = 1e-16):
    i = np.argsort(-conf)
    tp, conf, pred_cls = tp[i], conf[i], pred_cls[i]
    unique_classes, nt = np.unique(target_cls, return_counts=True)
    ap, p, r = np.zeros((len(unique_classes), tp.shape[1])), np.zeros(len(nt)), np.zeros(len(nt))
    for ci, c in enumerate(unique_classes):
        i = pred_cls == c
        n_l, n_p = nt[ci], i.sum()
        if n_p == 0 or n_l == 0:
            continue
        fpc, tpc = (1 - tp[i]).cumsum(0), tp[i].cumsum(0)
        recall, precision = tpc / (n_l + eps), tpc / (tpc + fpc)
        r[ci], p[ci] = recall[-1, 0], precision[-1, 0]
        for j in range(tp.shape[1]):
            ap[ci, j] = compute_ap(recall[:, j], precision[:, j])
    return p, r, ap, unique_classes.astype(int)

def summarize(p: np.ndarray, r: np.ndarray, ap: np.ndarray) -> Dict[str, float]:
    ap50 = ap[:, 0]
    ap_all = ap.max(1)  # ruleid: MLS306
    return {"metrics/precision": float(p.mean()), "metrics/recall": float(r.mean()),
            "metrics/mAP_0.5": float(ap50.mean()), "metrics/mAP_0.5:0.95": float(ap_all.mean())}

def gather_predictions(stats: List[Tuple]) -> List[Tuple]:
    """Collect per-image statistics from every rank onto rank 0 over a CPU (gloo) side group."""
    if get_world_size() == 1:
        return stats
    with contextlib.ExitStack() as stack:
        group = dist.new_group(backend="gloo")
        stack.callback(teardown)  # todoruleid: family 3 (missed)
        out: List[Optional[List[Tuple]]] = [None] * get_world_size()
        dist.all_gather_object(out, stats, group=group)
    return [s for part in out for s in part]

def _resolve(target: str):
    mod, _, attr = target.partition(":")
    return operator.attrgetter(attr)(importlib.import_module(mod))

def coco_cross_check(ann_file: str, pred_json: str) -> Optional[Dict[str, float]]:
    """Optional pycocotools evaluation on the official annotation file."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        LOGGER.info("pycocotools not installed, skipping COCO cross-check")
        return None
    gt = COCO(ann_file)
    hook = gt.dataset.get("info", {}).get("eval_hook")
    if hook:
        # dataset exporters may register a normaliser for category / image id remapping
        fn = _resolve(hook["target"])
        fn(*hook.get("args", ()))  # todoruleid: family 8 (missed)
    dt = gt.loadRes(pred_json)
    ev = COCOeval(gt, dt, "bbox")
    ev.params.imgIds = sorted({d["image_id"] for d in dt.dataset["annotations"]})
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return {"coco/mAP_0.5:0.95": float(ev.stats[0]), "coco/mAP_0.5": float(ev.stats[1])}

@torch.no_grad()
def run_validation(model, dataloader, conf_thres: float = 0.001, iou_thres: float = 0.6,
                   half: bool = True, save_json: Optional[str] = None, ann_file: Optional[str] = None,
                   class_map: Optional[np.ndarray] = None) -> Dict[str, float]:
    _install_nms_shim()
    device = next(model.parameters()).device
    half &= device.type != "cpu"
    model.half() if half else model.float()
    model.eval()
    stats, jdict = [], []
    with RNGSnapshot():
        for imgs, targets, paths, shapes in dataloader:
            imgs = imgs.to(device, non_blocking=True).to(torch.half if half else torch.float) / 255
            targets = targets.to(device)
            height, width = imgs.shape[2:]
            preds, _ = model(imgs)
            targets[:, 2:] *= torch.tensor((width, height, width, height), device=device)
            preds = non_max_suppression(preds, conf_thres, iou_thres)
            for si, pred in enumerate(preds):
                labels = targets[targets[:, 0] == si, 1:]
                nl, npr = labels.shape[0], pred.shape[0]
                correct = torch.zeros(npr, IOU_THRESHOLDS.shape[0], dtype=torch.bool, device=device)
                if npr == 0:
                    if nl:
                        stats.append((correct.cpu(), torch.zeros(0), torch.zeros(0), labels[:, 0].cpu()))
                    continue
                if nl:
                    tbox = xywh2xyxy(labels[:, 1:5])
                    correct = match_predictions(pred, torch.cat((labels[:, 0:1], tbox), 1))
                stats.append((correct.cpu(), pred[:, 4].cpu(), pred[:, 5].cpu(), labels[:, 0].cpu()))
                if save_json and shapes[si] is not None:
                    (h0, w0), ((gy, gx), (padw, padh)) = shapes[si]
                    stem = Path(paths[si]).stem
                    for x1, y1, x2, y2, conf, cls in pred.tolist():
                        x1, y1, x2, y2 = (x1 - padw) / gx, (y1 - padh) / gy, (x2 - padw) / gx, (y2 - padh) / gy
                        jdict.append({"image_id": int(stem) if stem.isnumeric() else stem,
                                      "category_id": int(class_map[int(cls)]) if class_map is not None else int(cls),
                                      "bbox": [round(v, 3) for v in (x1, y1, x2 - x1, y2 - y1)],
                                      "score": round(conf, 5)})
    stats = gather_predictions(stats)
    model.float()
    metrics: Dict[str, float] = {}
    if is_main_process() and stats:
        cat = [torch.cat(x, 0).numpy() for x in zip(*stats)]
        if cat[0].any():
            p, r, ap, _ = ap_per_class(*cat)
            metrics.update(summarize(p, r, ap))
        if save_json and jdict:
            with open(save_json, "w") as f:
                json.dump(jdict, f)
            if ann_file:
                metrics.update(coco_cross_check(ann_file, save_json) or {})
    return metrics
