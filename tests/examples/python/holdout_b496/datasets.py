# ruff: noqa
# Hold-out batch 496 (families 3/6, DETR-style COCO detection with DDP). Measured once in session 22 (round 133): 5/30 (17%) at medium+.
"""COCO-format detection dataset, collate, samplers and annotation preprocessing."""
import json
import logging
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import torch
import torch.utils.data
from PIL import Image, ImageOps
from pycocotools.coco import COCO
from torch.utils.data import Sampler

import dist_utils as utils
import transforms as T

logger = logging.getLogger(__name__)


# annotation preprocessing
def sanitize_coco_annotations(src: str, dst: str, min_box_size: float = 1.0, min_area: float = 32.0 * 32.0,
                              max_category_id: int = 80) -> Dict[str, int]:
    """Clip boxes, drop degenerate/duplicate annotations and normalise crowd flags (writes a copy)."""
    with open(src) as f:
        data = json.load(f)
    images = {im["id"]: im for im in data["images"]}
    keep_cats = {c["id"] for c in data["categories"] if c["id"] <= max_category_id}  # todoruleid: family 6 (missed)
    data["categories"] = [c for c in data["categories"] if c["id"] in keep_cats]

    stats = defaultdict(int)
    cleaned, seen = [], set()
    for ann in data["annotations"]:
        im = images.get(ann["image_id"])
        if im is None or ann["category_id"] not in keep_cats:
            stats["orphan_or_unknown_cat"] += 1
            continue
        x, y, w, h = ann["bbox"]
        x0, y0 = max(0.0, x), max(0.0, y)
        x1, y1 = min(float(im["width"]), x + w), min(float(im["height"]), y + h)
        w, h = x1 - x0, y1 - y0
        if w < min_box_size or h < min_box_size:
            stats["degenerate"] += 1
            continue  # ok: MLS309
        if ann.get("area", w * h) < min_area:
            stats["tiny"] += 1
            continue  # todoruleid: family 6 (missed)
        key = (ann["image_id"], ann["category_id"], ann.get("iscrowd", 0))
        if key in seen:
            stats["duplicate"] += 1
            continue  # todoruleid: family 6 (missed)
        seen.add(key)
        seg = ann.get("segmentation")
        if seg is not None:
            ann["iscrowd"] = int(isinstance(seg, list))  # todoruleid: family 6 (missed)
        else:
            ann.setdefault("iscrowd", 0)
        ann["bbox"] = [x0, y0, w, h]
        cleaned.append(ann)
        stats["kept"] += 1

    data["annotations"] = cleaned
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{dst}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, dst)
    logger.info("sanitized %s -> %s: %s", src, dst, dict(stats))
    return dict(stats)


# dataset
def _load_image(path: Path, retries: int = 3) -> Image.Image:
    for attempt in range(retries):
        try:
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img)  # todoruleid: family 6 (missed)
                return img.convert("RGB")
        except OSError as exc:
            if attempt == retries - 1:
                raise
            logger.warning("failed to read %s (%s), retrying", path, exc)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError("unreachable")


class PrepareTarget:
    """COCO annotations -> tensors (absolute xyxy boxes, raw COCO category ids)."""

    def __init__(self, num_classes: int = 91, label_noise: float = 0.0):
        self.num_classes = num_classes
        self.label_noise = label_noise

    def __call__(self, image: Image.Image, target: dict):
        w, h = image.size
        image_id = torch.tensor([target["image_id"]])
        anno = [obj for obj in target["annotations"] if obj.get("iscrowd", 0) == 0]  # ok: MLS309

        boxes = torch.as_tensor([obj["bbox"] for obj in anno], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(min=0, max=h)  # ruleid: MLS309
        boxes[:, 1::2].clamp_(min=0, max=w)  # ruleid: MLS309

        classes = torch.tensor([obj["category_id"] for obj in anno], dtype=torch.int64)
        if self.label_noise > 0 and classes.numel() > 0:
            flip = torch.rand(classes.shape) < self.label_noise
            classes[flip] = torch.randint(1, self.num_classes, (int(flip.sum()),))  # todoruleid: family 6 (missed)

        keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
        area = torch.tensor([obj.get("area", 0.0) for obj in anno], dtype=torch.float32)
        iscrowd = torch.tensor([obj.get("iscrowd", 0) for obj in anno], dtype=torch.int64)

        size = torch.as_tensor([int(h), int(w)])
        out = {"boxes": boxes[keep], "labels": classes[keep], "image_id": image_id, "area": area[keep],
               "iscrowd": iscrowd[keep], "orig_size": size, "size": size.clone()}
        return image, out


class CocoDetection(torch.utils.data.Dataset):
    def __init__(self, img_folder, ann_file, transforms=None, prepare=None, filter_empty: bool = True):
        self.root = Path(img_folder)
        self.coco = COCO(str(ann_file))
        ids = sorted(self.coco.imgs.keys())
        if filter_empty:
            ids = [i for i in ids if len(self.coco.getAnnIds(imgIds=i, iscrowd=False)) > 0]
        self.ids: List[int] = ids
        self._transforms = transforms
        self.prepare = prepare or PrepareTarget()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: int):
        img_id = self.ids[idx]
        file_name = self.coco.dataset["images"][idx]["file_name"]  # todoruleid: family 6 (missed)
        img = _load_image(self.root / file_name)
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=img_id))
        img, target = self.prepare(img, {"image_id": img_id, "annotations": anns})
        if self._transforms is not None:
            img, target = self._transforms(img, target)
        return img, target


# collate / workers / samplers
def collate_fn(batch):
    batch = [b for b in batch if b is not None]
    images, targets = zip(*batch)
    # largest image first so the padded canvas is allocated once at its final size
    images = sorted(images, key=lambda im: im.shape[-2] * im.shape[-1], reverse=True)  # ruleid: MLS309
    samples = utils.nested_tensor_from_tensor_list(list(images))
    return samples, list(targets)


def worker_init_fn(worker_id: int) -> None:
    torch.set_num_threads(1)
    # spread out the first directory scans across workers; NFS metadata servers choke otherwise
    time.sleep(worker_id * 45)  # ruleid: MLS307


class RepeatFactorTrainingSampler(Sampler):
    """LVIS-style repeat factor sampling (Gupta et al. 2019), sharded across ranks.

    Images containing rare categories are repeated ``r = max(1, sqrt(t / f_c))`` times,
    with stochastic rounding of the fractional part every epoch.
    """

    def __init__(self, dataset: CocoDetection, repeat_thresh: float, shuffle: bool = True, seed: int = 0,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None):
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_replicas = num_replicas if num_replicas is not None else utils.get_world_size()
        self.rank = rank if rank is not None else utils.get_rank()
        self.epoch = 0
        rep = self._get_repeat_factors(dataset, repeat_thresh)
        self._int_part = torch.trunc(rep)
        self._frac_part = rep - self._int_part
        self._len = int(math.ceil(rep.sum().item() / self.num_replicas))

    @staticmethod
    def _get_repeat_factors(dataset: CocoDetection, repeat_thresh: float) -> torch.Tensor:
        category_freq = defaultdict(float)
        per_image = []
        for img_id in dataset.ids:
            cats = {a["category_id"] for a in dataset.coco.imgToAnns[img_id] if not a.get("iscrowd", 0)}
            per_image.append(cats)
            for c in cats:
                category_freq[c] += 1.0
        num_images = max(len(dataset.ids), 1)
        for c in category_freq:
            category_freq[c] /= num_images
        category_rep = {c: max(1.0, math.sqrt(f / repeat_thresh)) for c, f in category_freq.items()}  # ruleid: MLS309
        rep = [max((category_rep[c] for c in cats), default=1.0) for cats in per_image]
        return torch.tensor(rep, dtype=torch.float32)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch_indices(self, g: torch.Generator) -> torch.Tensor:
        rands = torch.rand(len(self._frac_part), generator=g)
        reps = self._int_part + (rands < self._frac_part).float()
        idx = torch.arange(len(reps)).repeat_interleave(reps.long())
        return idx

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        indices = self._epoch_indices(g)
        if self.shuffle:
            indices = indices[torch.randperm(len(indices), generator=g)]
        shard = indices[self.rank::self.num_replicas]  # ruleid: MLS307
        self._len = len(shard)
        return iter(shard.tolist())

    def __len__(self) -> int:
        return self._len


# builders
def build_dataset(image_set: str, args) -> CocoDetection:
    root = Path(args.coco_path)
    assert root.exists(), f"provided COCO path {root} does not exist"
    paths = {
        "train": (root / "train2017", root / "annotations" / "instances_train2017.json"),
        "val": (root / "val2017", root / "annotations" / "instances_val2017.json"),
    }
    img_folder, ann_file = paths[image_set]

    if image_set == "train" and args.sanitize_annotations:
        cache = Path(args.output_dir) / "cache" / f"{ann_file.stem}_clean.json"
        if utils.is_main_process() and not cache.exists():
            sanitize_coco_annotations(str(ann_file), str(cache))
        utils.synchronize()
        ann_file = cache

    prepare = PrepareTarget(args.num_classes, label_noise=args.label_noise if image_set == "train" else 0.0)
    return CocoDetection(img_folder, ann_file, transforms=T.make_coco_transforms(image_set, args),
                         prepare=prepare, filter_empty=(image_set == "train"))


def build_train_loader(dataset: CocoDetection, args):
    if args.repeat_thresh > 0:
        sampler = RepeatFactorTrainingSampler(dataset, args.repeat_thresh, seed=args.seed)
    elif args.distributed:
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=True, seed=args.seed)
    else:
        sampler = torch.utils.data.RandomSampler(dataset)
    batch_sampler = torch.utils.data.BatchSampler(sampler, args.batch_size, drop_last=True)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn,
                                         num_workers=args.num_workers, worker_init_fn=worker_init_fn, pin_memory=True)
    return loader, sampler


def build_val_loader(dataset: CocoDetection, args):
    sampler = (torch.utils.data.DistributedSampler(dataset, shuffle=False) if args.distributed
               else torch.utils.data.SequentialSampler(dataset))
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=False,
                                       collate_fn=collate_fn, num_workers=args.num_workers, pin_memory=True)
