# ruff: noqa
# Hold-out batch 410 (adversarial, detectron2-style instance segmentation framework). Measured once in session 16 (round 112): 9/29 (31%) at medium+, one benign look-alike flagged.
"""COCO-style instance segmentation data: loading, augmentation, mapping and sampling."""
import functools
import itertools
import json
import logging
import math
import os
import time
from collections import defaultdict

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset, Sampler

from utils import DATASETS, MAPPERS, as_tuple, get_rank, get_world_size, worker_init_fn

logger = logging.getLogger("vision.data")


def load_json_with_retry(path, retries=5, backoff=2.0):
    """Network filesystems sometimes return transient errors right after job start."""
    for attempt in range(retries):
        try:
            with open(path, "r") as f:
                return json.load(f)
        except OSError as e:
            if attempt == retries - 1:
                raise
            wait = backoff * (2 ** attempt)
            logger.warning("Reading %s failed (%s); retrying in %.1fs", path, e, wait)
            time.sleep(wait)  # ok: MLS307


def _polygons_to_mask(polygons, height, width):
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        if len(poly) >= 6:
            draw.polygon([float(v) for v in poly], outline=1, fill=1)
    return np.asarray(canvas, dtype=bool)


@DATASETS.register(name="coco_instances")
def load_coco_instances(json_file, image_root, filter_empty=True):
    t0 = time.perf_counter()
    coco = load_json_with_retry(json_file)
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    id_map = {c["id"]: i for i, c in enumerate(cats)}
    anns_per_image = defaultdict(list)
    for ann in coco["annotations"]:
        anns_per_image[ann["image_id"]].append(ann)

    records = []
    for img in coco["images"]:
        objs = []
        for ann in anns_per_image.get(img["id"], []):
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = ann["bbox"]
            if w < 1 or h < 1:
                continue
            objs.append({"bbox": [x, y, x + w, y + h], "category_id": id_map[ann["category_id"]],
                         "segmentation": ann.get("segmentation", [])})
        if filter_empty and not objs:
            continue
        records.append({"file_name": os.path.join(image_root, img["file_name"]), "image_id": img["id"],
                        "height": img["height"], "width": img["width"], "annotations": objs})
    logger.info("Loaded %d images from %s in %.2fs", len(records), json_file, time.perf_counter() - t0)
    meta = {"thing_classes": [c["name"] for c in cats],
            "contiguous_to_dataset_id": {i: c["id"] for i, c in enumerate(cats)}}
    return records, meta


class Boxes:
    """(N, 4) float32 array in XYXY absolute coordinates."""
    def __init__(self, array):
        self.array = np.asarray(array, dtype=np.float32).reshape(-1, 4)


class BitMasks:
    """(N, H, W) boolean masks."""
    def __init__(self, array):
        self.array = np.asarray(array, dtype=bool)

    def __len__(self):
        return len(self.array)


@functools.singledispatch
def hflip(target, width):
    raise TypeError(f"hflip not supported for {type(target)}")


@hflip.register(np.ndarray)
def _hflip_image(image, width):
    return np.ascontiguousarray(image[:, ::-1])


@hflip.register(Boxes)
def _hflip_boxes(boxes, width):
    arr = boxes.array.copy()
    arr[:, [0, 2]] = width - boxes.array[:, [2, 0]]  # ok: MLS309
    return Boxes(arr)


@hflip.register(BitMasks)
def _hflip_masks(masks, width):
    return BitMasks(np.ascontiguousarray(masks.array[:, ::-1]))  # todoruleid: family 6 (missed)


@functools.singledispatch
def resize(target, h, w, new_h, new_w):
    raise TypeError(f"resize not supported for {type(target)}")


@resize.register(np.ndarray)
def _resize_image(image, h, w, new_h, new_w):
    pil = Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR)
    return np.asarray(pil)


@resize.register(Boxes)
def _resize_boxes(boxes, h, w, new_h, new_w):
    scale = np.array([new_w / w, new_h / h] * 2, dtype=np.float32)
    return Boxes(boxes.array * scale)


@resize.register(BitMasks)
def _resize_masks(masks, h, w, new_h, new_w):
    if len(masks) == 0:
        return BitMasks(np.zeros((0, new_h, new_w), dtype=bool))
    size = (new_h, new_w)
    out = [np.asarray(Image.fromarray(m.astype(np.uint8)).resize(size, Image.NEAREST), dtype=bool)  # todoruleid: family 6 (missed)
           for m in masks.array]
    return BitMasks(np.stack(out))


class ResizeShortestEdge:
    def __init__(self, short_edge_length, max_size, sample_style="choice"):
        self.short_edge_length = as_tuple(short_edge_length)
        self.max_size, self.sample_style = max_size, sample_style

    def get_size(self, h, w, rng):
        if self.sample_style == "range":
            size = int(rng.integers(self.short_edge_length[0], self.short_edge_length[1] + 1))
        else:
            size = int(rng.choice(self.short_edge_length))
        scale = size / min(h, w)
        new_h, new_w = (size, scale * w) if h < w else (scale * h, size)
        if max(new_h, new_w) > self.max_size:
            rescale = self.max_size / max(new_h, new_w)
            new_h, new_w = new_h * rescale, new_w * rescale
        return int(new_h + 0.5), int(new_w + 0.5)


def clip_boxes_(boxes, width, height):
    boxes.array[:, 0::2] = boxes.array[:, 0::2].clip(0, width)
    boxes.array[:, 1::2] = boxes.array[:, 1::2].clip(0, height)
    return boxes


@MAPPERS.register(name="InstanceMapper")
class InstanceMapper:
    """Reads an image record, applies augmentation and returns model-ready tensors."""

    def __init__(self, is_train=True, min_size=(800,), max_size=1333, sample_style="choice",
                 flip_prob=0.5, min_box_side=1e-5):
        self.is_train, self.min_box_side = is_train, min_box_side
        self.resizer = ResizeShortestEdge(min_size, max_size, sample_style)
        self.flip_prob = flip_prob if is_train else 0.0

    def __call__(self, record, rng):
        image = np.asarray(Image.open(record["file_name"]).convert("RGB"))
        h, w = image.shape[:2]
        annos = record.get("annotations", [])
        boxes = Boxes([a["bbox"] for a in annos])
        masks = BitMasks(np.stack([_polygons_to_mask(a["segmentation"], h, w) for a in annos])
                         if annos else np.zeros((0, h, w), dtype=bool))
        classes = np.array([a["category_id"] for a in annos], dtype=np.int64)

        new_h, new_w = self.resizer.get_size(h, w, rng)
        image = resize(image, h, w, new_h, new_w)
        boxes = resize(boxes, h, w, new_h, new_w)
        masks = resize(masks, h, w, new_h, new_w)

        if rng.random() < self.flip_prob:
            image = hflip(image, new_w)
            boxes = hflip(boxes, new_w)
            masks = hflip(masks, new_w)

        out = {
            "image": torch.as_tensor(image.transpose(2, 0, 1).copy()),
            "image_id": record["image_id"],
            "height": record["height"],
            "width": record["width"],
        }
        if not self.is_train:
            return out

        clip_boxes_(boxes, *image.shape[:2])  # todoruleid: family 6 (missed)
        arr = boxes.array
        keep = ((arr[:, 2] - arr[:, 0]) > self.min_box_side) & ((arr[:, 3] - arr[:, 1]) > self.min_box_side)
        out["instances"] = {
            "boxes": torch.as_tensor(arr[keep]),
            "labels": torch.as_tensor(classes[keep]),
            "masks": torch.as_tensor(masks.array[keep]),
        }
        return out


class MappedDataset(Dataset):
    def __init__(self, records, mapper, seed=0):
        self._records = records
        self._mapper = mapper
        self._seed = seed

    def __len__(self):
        return len(self._records)

    def _rng_for(self, idx):
        return np.random.default_rng((self._seed, idx))  # todoruleid: family 1 (missed)

    def __getitem__(self, idx):
        return self._mapper(self._records[idx], self._rng_for(idx))


def _seeded_generator(seed):
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


class TrainingSampler(Sampler):
    """Infinite stream of shuffled indices, sharded across ranks."""

    def __init__(self, size, shuffle=True, seed=0):
        self._size = size
        self._shuffle = shuffle
        self._rank = get_rank()
        self._world_size = get_world_size()
        self._new_generator = functools.partial(_seeded_generator, seed)

    def __iter__(self):
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self):
        while True:
            if self._shuffle:
                yield from torch.randperm(self._size, generator=self._new_generator()).tolist()  # todoruleid: family 1 (missed)
            else:
                yield from range(self._size)


class InferenceSampler(Sampler):
    def __init__(self, size):
        shard = int(math.ceil(size / get_world_size()))
        start = shard * get_rank()
        self._indices = range(start, min(start + shard, size))

    def __iter__(self):
        yield from self._indices

    def __len__(self):
        return len(self._indices)


def trivial_batch_collator(batch):
    return batch


def _build_mapped_dataset(cfg, split, is_train):
    records, meta = DATASETS.build(dict(cfg.DATASETS[split]))
    mapper = MAPPERS.build({"type": cfg.INPUT.MAPPER, "is_train": is_train,
                            "min_size": cfg.INPUT.MIN_SIZE_TRAIN if is_train else cfg.INPUT.MIN_SIZE_TEST,
                            "max_size": cfg.INPUT.MAX_SIZE_TRAIN if is_train else cfg.INPUT.MAX_SIZE_TEST,
                            "flip_prob": cfg.INPUT.FLIP_PROB})
    return records, meta, MappedDataset(records, mapper, seed=cfg.SEED)


def build_train_loader(cfg):
    records, meta, dataset = _build_mapped_dataset(cfg, "TRAIN", is_train=True)
    sampler = TrainingSampler(len(dataset), seed=cfg.SEED)
    per_gpu = cfg.SOLVER.IMS_PER_BATCH // get_world_size()
    loader = DataLoader(dataset, batch_size=per_gpu, sampler=sampler,
                        num_workers=cfg.DATALOADER.NUM_WORKERS, collate_fn=trivial_batch_collator,
                        worker_init_fn=worker_init_fn, pin_memory=True, drop_last=True)
    return loader, meta


def build_test_loader(cfg):
    records, meta, dataset = _build_mapped_dataset(cfg, "TEST", is_train=False)
    loader = DataLoader(dataset, batch_size=1, sampler=InferenceSampler(len(dataset)),
                        num_workers=cfg.DATALOADER.NUM_WORKERS, collate_fn=trivial_batch_collator)
    return loader, meta, records
