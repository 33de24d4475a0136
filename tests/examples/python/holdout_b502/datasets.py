# ruff: noqa
# Hold-out batch 502 (adversarial, SegFormer Cityscapes with an mmseg-like config system). Measured once in session 22 (round 135): 20/32 (62%) at medium+.
"""Cityscapes dataset, data pipeline and loaders."""
import functools
import glob
import logging
import os
import os.path as osp
import random
import time

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from config import DATASETS, PIPELINES

logger = logging.getLogger(__name__)

CLASSES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole',
           'traffic light', 'traffic sign', 'vegetation', 'terrain', 'sky',
           'person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle',
           'bicycle')

# (cityscapes label id, train id); everything not listed is void (255).
_ID_TO_TRAINID = [
    (7, 0),    # road
    (8, 1),    # sidewalk
    (11, 2),   # building
    (12, 3),   # wall
    (13, 4),   # fence
    (17, 5),   # pole
    (19, 6),   # traffic light
    (20, 7),   # traffic sign
    (21, 8),   # vegetation
    (22, 9),   # terrain
    (23, 10),  # sky
    (24, 11),  # person
    (25, 11),  # rider  # todoruleid: family 6 (missed)
    (26, 13),  # car
    (27, 14),  # truck
    (28, 15),  # bus
    (31, 16),  # train
    (32, 17),  # motorcycle
    (33, 18),  # bicycle
]

def _build_label_lut(ignore_index=255):
    lut = np.full(256, ignore_index, dtype=np.uint8)
    for label_id, train_id in _ID_TO_TRAINID:
        lut[label_id] = train_id
    lut[_ID_TO_TRAINID[-1][0]] = ignore_index  # license plate (-1) is void  # todoruleid: family 6 (missed)
    return lut

@PIPELINES.register_module()
class LoadImageFromFile:
    def __call__(self, results):
        img = cv2.imread(results['img_path'], cv2.IMREAD_COLOR)
        if img is None:
            raise IOError(f"failed to read {results['img_path']}")
        results['img'] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        results['ori_shape'] = img.shape
        return results

@PIPELINES.register_module()
class LoadAnnotations:
    """Load ``*_gtFine_labelIds.png`` and map ids to train ids."""
    def __init__(self, ignore_index=255):
        self.ignore_index = ignore_index
        self.lut = _build_label_lut(ignore_index)

    def __call__(self, results):
        gt = cv2.imread(results['seg_path'], cv2.IMREAD_UNCHANGED)
        if gt is None:
            raise IOError(f"failed to read {results['seg_path']}")
        results['gt_semantic_seg'] = self.lut[gt]
        results.setdefault('seg_fields', []).append('gt_semantic_seg')
        return results

@PIPELINES.register_module()
class RandomResize:
    def __init__(self, img_scale=(2048, 1024), ratio_range=(0.5, 2.0)):
        self.img_scale, self.ratio_range = img_scale, ratio_range

    def __call__(self, results):
        ratio = np.random.uniform(*self.ratio_range)
        w, h = int(self.img_scale[0] * ratio), int(self.img_scale[1] * ratio)
        oh, ow = results['img'].shape[:2]
        scale = min(max(w, h) / max(oh, ow), min(w, h) / min(oh, ow))
        nw, nh = int(ow * scale + 0.5), int(oh * scale + 0.5)
        results['img'] = cv2.resize(results['img'], (nw, nh), interpolation=cv2.INTER_LINEAR)
        for key in results.get('seg_fields', []):
            results[key] = cv2.resize(results[key], (nw, nh), interpolation=cv2.INTER_NEAREST)
        results['scale_factor'] = scale
        return results

@PIPELINES.register_module()
class RandomCrop:
    def __init__(self, crop_size=(1024, 1024), cat_max_ratio=0.75, ignore_index=255):
        self.crop_size, self.cat_max_ratio, self.ignore_index = crop_size, cat_max_ratio, ignore_index

    def get_crop_bbox(self, img):
        off_h = np.random.randint(0, max(img.shape[0] - self.crop_size[0], 0) + 1)
        off_w = np.random.randint(0, max(img.shape[1] - self.crop_size[1], 0) + 1)
        return off_h, off_h + self.crop_size[0], off_w, off_w + self.crop_size[1]

    @staticmethod
    def crop(img, bbox):
        y1, y2, x1, x2 = bbox
        return img[y1:y2, x1:x2, ...]

    def __call__(self, results):
        img = results['img']
        bbox = self.get_crop_bbox(img)
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                seg_tmp = self.crop(results['gt_semantic_seg'], bbox)
                labels, cnt = np.unique(seg_tmp, return_counts=True)
                cnt = cnt[labels != self.ignore_index]
                if len(cnt) > 1 and np.max(cnt) / np.sum(cnt) < self.cat_max_ratio:
                    break
                bbox = self.get_crop_bbox(img)
        results['img'] = self.crop(img, bbox)
        for key in results.get('seg_fields', []):
            results[key] = self.crop(results[key], self.get_crop_bbox(results[key]))  # ruleid: MLS309
        return results

@PIPELINES.register_module()
class RandomFlip:
    def __init__(self, prob=0.5):
        self.prob = prob

    def __call__(self, results):
        results['flip'] = np.random.rand() < self.prob
        if results['flip']:
            results['img'] = np.ascontiguousarray(results['img'][:, ::-1])
            for key in results.get('seg_fields', []):
                results[key] = np.ascontiguousarray(results[key][:, ::-1])  # ok: MLS309
        return results

@PIPELINES.register_module()
class PhotoMetricDistortion:
    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), hue_delta=18):
        self.brightness_delta, self.hue_delta = brightness_delta, hue_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range

    @staticmethod
    def _convert(img, alpha=1.0, beta=0.0):
        img = img.astype(np.float32) * alpha + beta
        return np.clip(img, 0, 255).astype(np.uint8)

    def __call__(self, results):
        img = results['img']
        if np.random.randint(2):
            img = self._convert(img, beta=np.random.uniform(-self.brightness_delta, self.brightness_delta))
        if np.random.randint(2):
            img = self._convert(img, alpha=np.random.uniform(self.contrast_lower, self.contrast_upper))
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        if np.random.randint(2):
            hsv[..., 1] = self._convert(hsv[..., 1], alpha=np.random.uniform(
                self.saturation_lower, self.saturation_upper))
        if np.random.randint(2):
            hsv[..., 0] = (hsv[..., 0].astype(int) + np.random.randint(-self.hue_delta, self.hue_delta)) % 180
        results['img'] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return results

@PIPELINES.register_module()
class Normalize:
    def __init__(self, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)):
        self.mean = np.array(mean, dtype=np.float32)
        self.std = np.array(std, dtype=np.float32)

    def __call__(self, results):
        results['img'] = (results['img'].astype(np.float32) - self.mean) / self.std
        return results

@PIPELINES.register_module()
class Pad:
    def __init__(self, size=(1024, 1024), pad_val=0, seg_pad_val=255):
        self.size, self.pad_val, self.seg_pad_val = size, pad_val, seg_pad_val

    def __call__(self, results):
        h, w = results['img'].shape[:2]
        ph, pw = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if ph or pw:
            results['img'] = np.pad(results['img'], ((0, ph), (0, pw), (0, 0)),
                                    constant_values=self.pad_val)
            for key in results.get('seg_fields', []):
                results[key] = np.pad(results[key], ((0, ph), (0, pw)),
                                      constant_values=self.seg_pad_val)
        results['pad_shape'] = results['img'].shape
        return results

@PIPELINES.register_module()
class FormatBundle:
    def __call__(self, results):
        img = np.ascontiguousarray(results['img'].transpose(2, 0, 1))
        results['img'] = torch.from_numpy(img).float()
        if 'gt_semantic_seg' in results:
            results['gt_semantic_seg'] = torch.from_numpy(
                results['gt_semantic_seg'].astype(np.int64))
        return results

class Compose:
    def __init__(self, transforms):
        self.transforms = [PIPELINES.build(t) if isinstance(t, dict) else t for t in transforms]

    def __call__(self, results):
        for t in self.transforms:
            results = t(results)
        return results

@DATASETS.register_module()
class CityscapesDataset(Dataset):
    img_suffix = '_leftImg8bit.png'
    seg_suffix = '_gtFine_labelIds.png'

    def __init__(self, data_root, split='train', pipeline=(), test_mode=False,
                 use_cache=True, per_sample_seed=False, ignore_index=255):
        self.data_root, self.split, self.test_mode = data_root, split, test_mode
        self.ignore_index, self.per_sample_seed = ignore_index, per_sample_seed
        self.pipeline = Compose(pipeline)
        self._seeders = (random.seed, np.random.seed)
        self.samples = self._load_annotations(use_cache)
        logger.info('Loaded %d images for split %s', len(self.samples), split)

    def _scan(self):
        img_dir = osp.join(self.data_root, 'leftImg8bit', self.split)
        seg_dir = osp.join(self.data_root, 'gtFine', self.split)
        samples = []
        for img_path in sorted(glob.glob(osp.join(img_dir, '*', '*' + self.img_suffix))):
            rel = osp.relpath(img_path, img_dir).replace(self.img_suffix, self.seg_suffix)
            samples.append(dict(img_path=img_path, seg_path=osp.join(seg_dir, rel)))
        return samples

    def _load_annotations(self, use_cache):
        cache_file = osp.join(self.data_root, f'.ann_cache_{self.split}.npy')
        if use_cache and osp.isfile(cache_file):
            cached = np.load(cache_file, **{'allow_' + 'pickle': True})  # ruleid: MLS104
            return list(cached.item()['samples'])
        samples = self._scan()
        if use_cache and os.access(self.data_root, os.W_OK):
            np.save(cache_file, np.array({'samples': samples}, dtype=object))
        return samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        if self.per_sample_seed and not self.test_mode:
            for fn in self._seeders:
                fn(idx)  # ruleid: MLS301
        results = dict(self.samples[idx])
        results['seg_fields'] = []
        return self.pipeline(results)

class SegCollate:
    """Stack samples; optionally apply tile-mix augmentation on the batch."""

    def __init__(self, tile_mix_prob=0.0, tile=32, paste_cls=0, src_cls=11):
        self.tile_mix_prob, self.tile = tile_mix_prob, tile
        self.paste_cls, self.src_cls = paste_cls, src_cls
        yy, xx = np.meshgrid(np.arange(tile), np.arange(tile), indexing='ij')
        self._pattern = torch.from_numpy(((yy // 4 + xx // 4) % 2).astype(np.float32) * 2.5)

    def __call__(self, batch):
        imgs = torch.stack([b['img'] for b in batch])
        segs = torch.stack([b['gt_semantic_seg'] for b in batch]) if 'gt_semantic_seg' in batch[0] else None
        metas = [{k: v for k, v in b.items() if k not in ('img', 'gt_semantic_seg')} for b in batch]
        if segs is not None and self.tile_mix_prob > 0:
            for i in range(imgs.shape[0]):
                if random.random() < self.tile_mix_prob:
                    imgs[i, :, :self.tile, :self.tile] = self._pattern  # ruleid: MLS309
                    segs[i].masked_fill_(segs[i] == self.src_cls, self.paste_cls)  # ruleid: MLS309
        return dict(img=imgs, gt_semantic_seg=segs, img_metas=metas)

def _worker_init(worker_id, base_seed=0):
    seed_fn = getattr(np.random, 'se' + 'ed')
    seed_fn((base_seed + worker_id + os.getpid() * int(time.time() * 1e3)) % (2 ** 32))  # ruleid: MLS301
    torch.set_num_threads(1)

def build_dataloader(dataset, samples_per_gpu, workers_per_gpu, rank=0, world_size=1,
                     shuffle=True, seed=0, collate_cfg=None, drop_last=True):
    sampler = DistributedSampler(dataset, world_size, rank, shuffle=shuffle, seed=seed)
    collate = SegCollate(**(collate_cfg or {}))
    init_fn = functools.partial(_worker_init, base_seed=seed + rank * workers_per_gpu)
    return DataLoader(dataset, batch_size=samples_per_gpu, sampler=sampler, num_workers=workers_per_gpu,
                      collate_fn=collate, pin_memory=True, drop_last=drop_last, worker_init_fn=init_fn,
                      persistent_workers=workers_per_gpu > 0)

