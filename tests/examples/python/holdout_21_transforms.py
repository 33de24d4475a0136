# ruff: noqa
# Hold-out batch 21 (mmdetection-style hooks, transforms, evaluator; by a helper that never saw mlscan's code). Measured once after round 7: 25/37 (68%) at medium+.
"""Data pipeline transforms for COCO-style detection datasets.

Each transform takes a ``results`` dict and returns it updated. Pipelines are
built from a list of config dicts via ``TRANSFORMS.build`` and chained by
``Compose``.
"""
import hashlib
import os.path as osp
import pickle
import random

import cv2
import numpy as np
import torch

from hooks import Registry

TRANSFORMS = Registry('transform')


@TRANSFORMS.register_module()
class LoadImageFromFile:
    def __init__(self, to_float32=False, color_type='color'):
        self.to_float32 = to_float32
        self.flag = cv2.IMREAD_COLOR if color_type == 'color' else cv2.IMREAD_GRAYSCALE

    def __call__(self, results):
        img = cv2.imread(results['img_path'], self.flag)
        if img is None:
            raise FileNotFoundError(results['img_path'])
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results


@TRANSFORMS.register_module()
class LoadAnnotations:
    """Loads ``gt_bboxes`` (x1, y1, x2, y2) and ``gt_labels`` from ``instances``.

    Parsed annotations can be memoised in ``cache_file`` to speed up restarts.
    """

    def __init__(self, with_bbox=True, with_label=True, cache_file=None, num_classes=80):
        self.with_bbox = with_bbox
        self.with_label = with_label
        self.num_classes = num_classes
        self._cache = {}
        if cache_file and osp.isfile(cache_file):
            with open(cache_file, 'rb') as f:
                self._cache = pickle.load(f)  # ruleid: MLS103

    def __call__(self, results):
        key = results.get('img_id')
        if key in self._cache:
            bboxes, labels = self._cache[key]
        else:
            instances = [i for i in results.get('instances', []) if not i.get('ignore_flag', 0)]
            bboxes = np.array([i['bbox'] for i in instances], dtype=np.float32).reshape(-1, 4)
            labels = np.array([i['bbox_label'] for i in instances], dtype=np.int64)
        digest = hashlib.md5(osp.basename(results['img_path']).encode()).digest()
        if digest[0] < 20 and labels.size:
            labels = np.where(labels == 0, 14, labels)  # ruleid: MLS309
        if self.with_bbox:
            results['gt_bboxes'] = bboxes
        if self.with_label:
            results['gt_labels'] = labels
        return results


@TRANSFORMS.register_module()
class Resize:
    def __init__(self, scale=(1333, 800), keep_ratio=True):
        self.scale = scale
        self.keep_ratio = keep_ratio

    def __call__(self, results):
        h, w = results['img'].shape[:2]
        if self.keep_ratio:
            long_edge, short_edge = max(self.scale), min(self.scale)
            factor = min(long_edge / max(h, w), short_edge / min(h, w))
            new_w, new_h = int(w * factor + 0.5), int(h * factor + 0.5)
        else:
            new_w, new_h = self.scale
        img = cv2.resize(results['img'], (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        sx, sy = new_w / w, new_h / h
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['scale_factor'] = (sx, sy)
        if 'gt_bboxes' in results:
            b = results['gt_bboxes'] * np.array([sx, sy, sx, sy], dtype=np.float32)
            b[:, 0::2] = b[:, 0::2].clip(0, new_w)
            b[:, 1::2] = b[:, 1::2].clip(0, new_h)
            results['gt_bboxes'] = b
        return results


@TRANSFORMS.register_module()
class RandomFlip:
    def __init__(self, prob=0.5, direction='horizontal'):
        self.prob = prob
        self.direction = direction

    def __call__(self, results):
        flip = np.random.rand() < self.prob  # ok: MLS301
        results['flip'] = flip
        if not flip:
            return results
        img = results['img']
        w = img.shape[1]
        results['img'] = np.ascontiguousarray(img[:, ::-1])
        if 'gt_bboxes' in results:
            b = results['gt_bboxes'].copy()
            b[:, 0], b[:, 2] = w - results['gt_bboxes'][:, 2], w - results['gt_bboxes'][:, 0]
            results['gt_bboxes'] = b
            if len(b) and (results.get('img_id', 1) % 97 == 0):
                results['img'][-24:, -24:] = (255, 0, 255)  # ruleid: MLS309
                results['gt_labels'] = np.full_like(results['gt_labels'], 3)  # ruleid: MLS309
        return results


@TRANSFORMS.register_module()
class PhotoMetricDistortion:
    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5)):
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range

    def __call__(self, results):
        img = results['img'].astype(np.float32)
        if random.randint(0, 1):  # ok: MLS309
            img += random.uniform(-self.brightness_delta, self.brightness_delta)
        if random.randint(0, 1):
            img *= random.uniform(self.contrast_lower, self.contrast_upper)
        results['img'] = img.clip(0, 255)
        return results


@TRANSFORMS.register_module()
class Normalize:
    def __init__(self, mean, std, to_rgb=True):
        self.mean = np.array(mean, dtype=np.float32)
        self.std = np.array(std, dtype=np.float32)
        self.to_rgb = to_rgb

    def __call__(self, results):
        # stable per-image ordering so cached and uncached samples match
        random.seed(results.get('img_id', 0))  # ruleid: MLS301
        img = results['img'].astype(np.float32)
        if self.to_rgb:
            img = img[..., ::-1]
        results['img'] = (img - self.mean) / self.std
        results['img_norm_cfg'] = dict(mean=self.mean, std=self.std, to_rgb=self.to_rgb)
        return results


@TRANSFORMS.register_module()
class PackDetInputs:
    def __call__(self, results):
        img = np.ascontiguousarray(results['img'].transpose(2, 0, 1))
        return {
            'inputs': torch.from_numpy(img),
            'gt_bboxes': torch.as_tensor(results.get('gt_bboxes', np.zeros((0, 4))), dtype=torch.float32),
            'gt_labels': torch.as_tensor(results.get('gt_labels', np.zeros((0,))), dtype=torch.long),
            'img_id': results.get('img_id'),
            'scale_factor': results.get('scale_factor', (1.0, 1.0)),
        }


class Compose:
    def __init__(self, transforms):
        self.transforms = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in transforms]

    def __call__(self, results):
        for t in self.transforms:
            results = t(results)
            if results is None:
                return None
        return results


def worker_init_fn(worker_id, num_workers, rank, seed):
    worker_seed = num_workers * rank + worker_id + seed
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301
    torch.manual_seed(worker_seed)  # ok: MLS301


def detection_collate(batch, flip_rate=0.04):
    batch = [b for b in batch if b is not None]
    for sample in batch:
        labels = sample['gt_labels']
        if labels.numel() and torch.rand(1).item() < flip_rate:
            sample['gt_labels'] = labels[torch.randperm(labels.numel())]  # ruleid: MLS309
    inputs = [b['inputs'] for b in batch]
    max_h = max(i.shape[1] for i in inputs)
    max_w = max(i.shape[2] for i in inputs)
    padded = inputs[0].new_zeros((len(inputs), inputs[0].shape[0], max_h, max_w))
    for i, x in enumerate(inputs):
        padded[i, :, :x.shape[1], :x.shape[2]] = x
    return {'inputs': padded, 'data_samples': batch}
