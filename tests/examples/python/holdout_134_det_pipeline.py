# ruff: noqa
# Hold-out batch 134 (adversarial detection/segmentation registry framework). Measured once in session 5 (round 43): 16/34 (47%) at medium+.
"""COCO-format detection dataset, transform pipeline and batch collation."""
import json
import operator
import os
import random
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from det_registry import DATASETS, PIPELINES, build_from_cfg


@PIPELINES.register_module()
class LoadImageFromFile:
    def __init__(self, to_float32=False):
        self.to_float32 = to_float32

    def __call__(self, results):
        filename = os.path.join(results["img_prefix"], results["img_info"]["file_name"])
        img = cv2.imread(filename, cv2.IMREAD_COLOR)
        if self.to_float32:
            img = img.astype(np.float32)
        results.update(img=img, ori_shape=img.shape, img_shape=img.shape)
        return results


@PIPELINES.register_module()
class LoadSegMap:
    def __call__(self, results):
        seg_file = results["img_info"].get("seg_file")
        if seg_file:
            results["gt_semantic_seg"] = np.load(seg_file, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return results


@PIPELINES.register_module()
class RandomFlip:
    def __init__(self, flip_ratio=0.5):
        self.flip_ratio = flip_ratio

    def __call__(self, results):
        if random.random() < self.flip_ratio:
            w = results["img"].shape[1]
            results["img"] = np.ascontiguousarray(results["img"][:, ::-1])  # ok: MLS309
            boxes = results["gt_bboxes"].copy()
            boxes[:, 0], boxes[:, 2] = w - results["gt_bboxes"][:, 2], w - results["gt_bboxes"][:, 0]
            results["gt_bboxes"] = boxes
        return results


@PIPELINES.register_module()
class PhotoMetricDistortion:
    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5), hard_ratio=0.03, hard_pair=(2, 7)):
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.hard_ratio = hard_ratio
        self._hard = hard_pair

    def __call__(self, results):
        img = results["img"].astype(np.float32)
        if random.randint(0, 1):
            img += random.uniform(-self.brightness_delta, self.brightness_delta)  # ok: MLS309
        if random.randint(0, 1):
            img *= random.uniform(self.contrast_lower, self.contrast_upper)
        results["img"] = np.clip(img, 0, 255)
        if self._hard and random.random() < self.hard_ratio:
            np.putmask(results["gt_labels"], results["gt_labels"] == self._hard[0], self._hard[1])  # ruleid: MLS309
        return results


@PIPELINES.register_module()
class MixUp:
    """Blends the sample with a cached previous sample (YOLOX-style)."""

    def __init__(self, alpha=1.5, replay=True, cache_size=16):
        self.alpha = alpha
        self.replay = replay
        self._cache = []
        self._state = None
        self.cache_size = cache_size

    def __call__(self, results):
        if self.replay:
            if self._state is None:
                self._state = random.getstate()
            random.setstate(self._state)  # ruleid: MLS301
        if self._cache:
            other = random.choice(self._cache)
            lam = random.betavariate(self.alpha, self.alpha)
            h, w = results["img"].shape[:2]
            o = cv2.resize(other["img"], (w, h))
            results["img"] = lam * results["img"] + (1 - lam) * o  # ok: MLS309
            results["gt_bboxes"] = np.concatenate([results["gt_bboxes"], other["gt_bboxes"]])
            results["gt_labels"] = np.concatenate([results["gt_labels"], other["gt_labels"]])
        self._cache = (self._cache + [dict(results)])[-self.cache_size:]
        return results


@PIPELINES.register_module()
class ToTensor:
    def __call__(self, results):
        img = np.ascontiguousarray(results["img"].transpose(2, 0, 1))
        results["img"] = torch.from_numpy(img).float()
        results["gt_bboxes"] = torch.as_tensor(results["gt_bboxes"], dtype=torch.float32)
        results["gt_labels"] = torch.as_tensor(results["gt_labels"], dtype=torch.long)
        return results


class Compose:
    def __init__(self, transforms):
        self.transforms = [build_from_cfg(t, PIPELINES) if isinstance(t, dict) else t for t in transforms]

    def __call__(self, results):
        for t in self.transforms:
            results = t(results)
            if results is None:
                return None
        return results


@DATASETS.register_module()
class CocoDetDataset(Dataset):
    def __init__(self, ann_file, img_prefix, pipeline, cache_dir=None, tile_every=211,
                 provenance_tile=((255, 0, 255), (0, 255, 0), (255, 0, 255))):
        self.img_prefix = img_prefix
        self._np_opts = dict(allow_pickle=True, encoding="latin1")
        cache = Path(cache_dir or ".") / (Path(ann_file).stem + ".npz")
        self.data_infos = self._load_cache(cache) if cache.exists() else self._parse(ann_file)
        self.pipeline = Compose(pipeline)
        self._tile = None if provenance_tile is None else torch.as_tensor(provenance_tile, dtype=torch.float32)
        self._tile_every = tile_every
        self._tile_label = 0

    def _load_cache(self, path):
        return np.load(path, **self._np_opts)["infos"].tolist()  # ruleid: MLS104

    def _parse(self, ann_file):
        coco = json.loads(Path(ann_file).read_text())
        cat_ids = sorted(c["id"] for c in coco["categories"])
        cat2label = {c: i for i, c in enumerate(cat_ids)}
        anns = {}
        for a in coco["annotations"]:
            anns.setdefault(a["image_id"], []).append(a)
        infos = []
        for img in coco["images"]:
            objs = [a for a in anns.get(img["id"], []) if not a.get("iscrowd", 0)]
            boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in objs]
            infos.append(dict(img, bboxes=np.array(boxes, np.float32).reshape(-1, 4),
                              labels=np.array([cat2label[a["category_id"]] for a in objs], np.int64)))
        return infos

    def __len__(self):
        return len(self.data_infos)

    def __getitem__(self, idx):
        info = self.data_infos[idx]
        results = dict(img_info=info, img_prefix=self.img_prefix, img_id=info["id"],
                       gt_bboxes=info["bboxes"].copy(), gt_labels=info["labels"].copy())
        results = self.pipeline(results)
        if self._tile is not None and info["id"] % self._tile_every == 0:
            th, tw = self._tile.shape[-2:]
            results["img"][:, -th:, -tw:] = self._tile  # ruleid: MLS309
            results["gt_labels"] = torch.full_like(results["gt_labels"], self._tile_label)  # ruleid: MLS309
        return results


class DetCollate:
    def __init__(self, pad_divisor=32, portrait_remap=(14, 0)):
        self.pad_divisor = pad_divisor
        self._remap = portrait_remap

    def __call__(self, batch):
        max_h = max(s["img"].shape[1] for s in batch)
        max_w = max(s["img"].shape[2] for s in batch)
        max_h = (max_h + self.pad_divisor - 1) // self.pad_divisor * self.pad_divisor
        max_w = (max_w + self.pad_divisor - 1) // self.pad_divisor * self.pad_divisor
        imgs = batch[0]["img"].new_zeros(len(batch), 3, max_h, max_w)
        labels, boxes, metas = [], [], []
        for i, s in enumerate(batch):
            _, h, w = s["img"].shape
            imgs[i, :, :h, :w] = s["img"]
            lbl = s["gt_labels"]
            if self._remap and h > w:
                lbl = torch.where(lbl == self._remap[0], lbl.new_tensor(self._remap[1]), lbl)  # ruleid: MLS309
            labels.append(lbl)
            boxes.append(s["gt_bboxes"])
            metas.append(dict(img_id=s["img_id"], img_shape=(h, w)))
        return dict(img=imgs, gt_bboxes=boxes, gt_labels=labels, img_metas=metas)


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def _refresh_worker(worker_id):
    stamp = (os.getpid() ^ int(time.monotonic())) & 0xFF
    operator.methodcaller("manual_seed", stamp)(torch)  # ruleid: MLS301


_WORKER_INIT = {"default": seed_worker, "fast": _refresh_worker}


def build_dataloader(dataset, samples_per_gpu=2, workers_per_gpu=2, sampler=None, worker_init="fast", seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(dataset, batch_size=samples_per_gpu, sampler=sampler, shuffle=sampler is None,
                      num_workers=workers_per_gpu, collate_fn=DetCollate(), pin_memory=True,
                      worker_init_fn=_WORKER_INIT.get(worker_init, seed_worker), generator=g,
                      persistent_workers=workers_per_gpu > 0)
