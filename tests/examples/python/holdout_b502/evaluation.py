# ruff: noqa
# Hold-out batch 502 (adversarial, SegFormer Cityscapes with an mmseg-like config system). Measured once in session 22 (round 135): 20/32 (62%) at medium+.
"""mIoU evaluation for semantic segmentation."""
import logging
from collections import OrderedDict

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

logger = logging.getLogger(__name__)

def intersect_and_union(pred, label, num_classes, ignore_index=255):
    """Per-class intersection / union / prediction / label areas for one image."""
    mask = label != ignore_index
    pred, label = pred[mask], label[mask]
    intersect = pred[pred == label]
    area_intersect = torch.histc(intersect.float(), bins=num_classes, min=0, max=num_classes - 1)
    area_pred = torch.histc(pred.float(), bins=num_classes, min=0, max=num_classes - 1)
    area_label = torch.histc(label.float(), bins=num_classes, min=0, max=num_classes - 1)
    area_union = area_pred + area_label - area_intersect
    return area_intersect, area_union, area_pred, area_label

class IoUMetric:
    """Accumulates confusion areas over a dataset and reports aAcc / mIoU / mAcc."""

    def __init__(self, num_classes, class_names=None, ignore_index=255, nan_to_num=None):
        self.num_classes, self.ignore_index, self.nan_to_num = num_classes, ignore_index, nan_to_num
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.reset()

    def reset(self):
        self.total = torch.zeros((4, self.num_classes), dtype=torch.float64)

    def process(self, preds, labels):
        for pred, label in zip(preds, labels):
            if pred.shape != label.shape:
                pred = F.interpolate(pred[None, None].float(), size=label.shape,
                                     mode='nearest')[0, 0].long()
            areas = intersect_and_union(pred, label.to(pred.device), self.num_classes,
                                        self.ignore_index)
            self.total += torch.stack([a.double().cpu() for a in areas])

    def sync(self):
        if dist.is_available() and dist.is_initialized():
            t = self.total.cuda() if torch.cuda.is_available() else self.total
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            self.total = t.cpu()

    def compute(self):
        self.sync()
        area_intersect, area_union, area_pred, area_label = self.total.numpy()
        with np.errstate(divide='ignore', invalid='ignore'):
            iou = area_intersect / area_union
            acc = area_intersect / area_label
            all_acc = area_intersect.sum() / area_label.sum()
        valid = area_intersect > 0  # todoruleid: family 5 (missed)
        iou, acc = np.where(valid, iou, np.nan), np.where(valid, acc, np.nan)
        if self.nan_to_num is not None:
            iou = np.nan_to_num(iou, nan=self.nan_to_num)
            acc = np.nan_to_num(acc, nan=self.nan_to_num)
        metrics = OrderedDict(
            aAcc=float(all_acc) * 100,
            mIoU=float(np.nanmean(iou)) * 100,
            mAcc=float(np.nanmean(acc)) * 100,
        )
        per_class = OrderedDict(
            (name, dict(IoU=float(i) * 100, Acc=float(a) * 100))
            for name, i, a in zip(self.class_names, iou, acc))
        return metrics, per_class

@torch.no_grad()
def single_gpu_test(model, data_loader, metric, device='cuda'):
    model.eval()
    metric.reset()
    for batch in data_loader:
        img = batch['img'].to(device, non_blocking=True)
        preds = model(img, return_loss=False)
        metric.process(preds, batch['gt_semantic_seg'].to(device))
    model.train()
    return metric.compute()
