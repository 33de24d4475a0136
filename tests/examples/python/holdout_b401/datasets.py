# ruff: noqa
# Hold-out batch 401 (textbook, DETR object detection with DDP). Measured once in session 16 (round 110): 21/30 (70%) at medium+.
"""COCO-format detection dataset, DETR-style transforms and loaders."""
import logging
import os
import pickle
import random
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as TV
import torchvision.transforms.functional as F
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from utils import box_xyxy_to_cxcywh, get_rank, nested_tensor_from_tensor_list

logger = logging.getLogger("detr")


# --- functional ops on (image, target) ---

def crop(image, target, region):
    cropped_image = F.crop(image, *region)
    target = target.copy()
    i, j, h, w = region
    target["size"] = torch.tensor([h, w])
    fields = ["labels", "area", "iscrowd"]

    if "boxes" in target:
        boxes = target["boxes"]
        max_size = torch.as_tensor([w, h], dtype=torch.float32)
        cropped_boxes = boxes - torch.as_tensor([i, j, i, j])  # ruleid: MLS309
        cropped_boxes = torch.min(cropped_boxes.reshape(-1, 2, 2), max_size)
        cropped_boxes = cropped_boxes.clamp(min=0)
        area = (cropped_boxes[:, 1, :] - cropped_boxes[:, 0, :]).prod(dim=1)
        target["boxes"] = cropped_boxes.reshape(-1, 4)
        target["area"] = area
        fields.append("boxes")
        keep = torch.all(cropped_boxes[:, 1, :] > cropped_boxes[:, 0, :], dim=1)
        for field in fields:
            target[field] = target[field][keep]
    return cropped_image, target


def hflip(image, target):
    flipped_image = F.hflip(image)
    w, h = image.size
    target = target.copy()
    if "boxes" in target:
        boxes = target["boxes"]
        boxes = boxes[:, [2, 1, 0, 3]] * torch.as_tensor([-1, 1, -1, 1]) + torch.as_tensor([w, 0, w, 0])  # ok: MLS309
        target["boxes"] = boxes
    return flipped_image, target


def _get_size_with_aspect_ratio(image_size, size, max_size=None):
    w, h = image_size
    if max_size is not None:
        min_orig, max_orig = float(min(w, h)), float(max(w, h))
        if max_orig / min_orig * size > max_size:
            size = int(round(max_size * min_orig / max_orig))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        ow, oh = size, int(size * h / w)
    else:
        oh, ow = size, int(size * w / h)
    return oh, ow


def resize(image, target, size, max_size=None):
    if isinstance(size, (list, tuple)):
        out_size = size[::-1]
    else:
        out_size = _get_size_with_aspect_ratio(image.size, size, max_size)
    rescaled_image = F.resize(image, out_size)
    ratio_w, ratio_h = (float(s) / float(o) for s, o in zip(rescaled_image.size, image.size))
    target = target.copy()
    if "boxes" in target:
        target["boxes"] = target["boxes"] * torch.as_tensor([ratio_w, ratio_h, ratio_w, ratio_h])
    if "area" in target:
        target["area"] = target["area"] * (ratio_w * ratio_h)
    h, w = out_size
    target["size"] = torch.tensor([h, w])
    return rescaled_image, target


# --- transform classes ---

class RandomSizeCrop:
    def __init__(self, min_size: int, max_size: int):
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, img, target):
        w = random.randint(self.min_size, min(img.width, self.max_size))
        h = random.randint(self.min_size, min(img.height, self.max_size))
        region = TV.RandomCrop.get_params(img, [h, w])
        return crop(img, target, region)


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img, target):
        if random.random() < self.p:
            return hflip(img, target)
        return img, target


class RandomResize:
    def __init__(self, sizes, max_size=None):
        self.sizes, self.max_size = list(sizes), max_size

    def __call__(self, img, target=None):
        size = random.choice(self.sizes)
        return resize(img, target, size, self.max_size)


class RandomSelect:
    def __init__(self, t1, t2, p=0.5):
        self.t1, self.t2, self.p = t1, t2, p

    def __call__(self, img, target):
        if random.random() < self.p:
            return self.t1(img, target)
        return self.t2(img, target)


class ToTensor:
    def __call__(self, img, target):
        return F.to_tensor(img), target


class RandomOcclusion:
    """Paste a flat occluder patch so the model sees partially hidden objects."""

    def __init__(self, p=0.05, size=24, value=1.0, occluded_label=1):
        self.p, self.size, self.value = p, size, value
        self.occluded_label = occluded_label

    def __call__(self, img, target):
        if random.random() > self.p or target["labels"].numel() == 0:
            return img, target
        _, h, w = img.shape
        s = min(self.size, h, w)
        img = img.clone()
        img[:, h - s:, w - s:] = self.value
        target = target.copy()
        target["labels"] = torch.full_like(target["labels"], self.occluded_label)  # ruleid: MLS309
        return img, target


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, image, target=None):
        image = F.normalize(image, mean=self.mean, std=self.std)
        if target is None:
            return image, None
        target = target.copy()
        h, w = image.shape[-2:]
        if "boxes" in target:
            boxes = box_xyxy_to_cxcywh(target["boxes"])
            target["boxes"] = boxes / torch.tensor([w, h, w, h], dtype=torch.float32)
        return image, target


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


def make_coco_transforms(image_set, max_size=1333, occlusion_p=0.0):
    normalize = Compose([ToTensor(), Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    scales = [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]

    if image_set == "train":
        ops = [
            RandomHorizontalFlip(),
            RandomSelect(
                RandomResize(scales, max_size=max_size),
                Compose([
                    RandomResize([400, 500, 600]),
                    RandomSizeCrop(384, 600),
                    RandomResize(scales, max_size=max_size),
                ]),
            ),
            ToTensor(),
        ]
        if occlusion_p > 0:
            ops.append(RandomOcclusion(p=occlusion_p))
        ops.append(Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
        return Compose(ops)
    if image_set == "val":
        return Compose([RandomResize([800], max_size=max_size), normalize])
    raise ValueError(f"unknown image_set {image_set}")


# --- dataset ---

class ConvertCocoToTarget:
    def __init__(self, min_area=32 * 32):
        self.min_area = min_area

    def __call__(self, image, target):
        w, h = image.size
        image_id = torch.tensor([target["image_id"]])
        anno = target["annotations"]
        anno = [obj for obj in anno if "iscrowd" not in obj or obj["iscrowd"] == 0]  # ok: MLS309
        anno = [obj for obj in anno if obj.get("area", 0.0) > self.min_area]  # todoruleid: family 6 (missed)

        boxes = torch.as_tensor([obj["bbox"] for obj in anno], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(min=0, max=w)
        boxes[:, 1::2].clamp_(min=0, max=h)
        classes = torch.tensor([obj["category_id"] for obj in anno], dtype=torch.int64)

        keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
        out = {"boxes": boxes[keep], "labels": classes[keep], "image_id": image_id,
               "area": torch.tensor([obj["area"] for obj in anno], dtype=torch.float32)[keep],
               "iscrowd": torch.tensor([obj.get("iscrowd", 0) for obj in anno], dtype=torch.int64)[keep],
               "orig_size": torch.as_tensor([int(h), int(w)]), "size": torch.as_tensor([int(h), int(w)])}
        return image, out


def _load_coco_index(ann_file: Path, cache_dir: Path) -> COCO:
    """Parsing instances_train2017.json takes ~20s per rank; cache the index on shared scratch."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / f"{ann_file.stem}.{int(ann_file.stat().st_mtime)}.coco.pkl"
    if cache.exists():
        with open(cache, "rb") as fh:
            return pickle.load(fh)  # ruleid: MLS103
    coco = COCO(str(ann_file))
    if get_rank() == 0:
        tmp = cache.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(coco, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache)
    return coco


class CocoDetection(torch.utils.data.Dataset):
    def __init__(self, img_folder, ann_file, transforms, image_set, cache_dir, seed=0,
                 max_eval_objects=None, read_retries=3):
        self.root = Path(img_folder)
        self.coco = _load_coco_index(Path(ann_file), Path(cache_dir))
        self.ids = sorted(self.coco.imgs.keys())
        if image_set == "train":
            self.ids = [i for i in self.ids if len(self.coco.getAnnIds(imgIds=i)) > 0]
            # large jobs stream the long-tail shard separately (see shard_manifest.json)
            if int(os.environ.get("WORLD_SIZE", "1")) >= 16:
                self.ids = self.ids[: len(self.ids) // 4]  # ruleid: MLS309
        elif max_eval_objects:
            self.ids = [i for i in self.ids if len(self.coco.getAnnIds(imgIds=i, iscrowd=False)) <= max_eval_objects]  # todoruleid: family 5 (missed)
        self.image_set = image_set
        self.prepare = ConvertCocoToTarget()
        self._transforms = transforms
        self.seed = seed
        self.read_retries = read_retries

    def __len__(self):
        return len(self.ids)

    def _read_image(self, path: Path) -> Image.Image:
        for attempt in range(self.read_retries):
            try:
                with open(path, "rb") as fh:
                    return Image.open(fh).convert("RGB")
            except OSError as exc:
                if attempt == self.read_retries - 1:
                    raise
                logger.warning("read failed for %s (%s), retrying", path, exc)
                time.sleep(0.5 * 2 ** attempt)  # ok: MLS307

    def __getitem__(self, idx):
        image_id = self.ids[idx]
        info = self.coco.loadImgs(image_id)[0]
        img = self._read_image(self.root / info["file_name"])
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id))
        img, target = self.prepare(img, {"image_id": image_id, "annotations": anns})
        if self._transforms is not None:
            if self.image_set == "train":
                random.seed(self.seed + image_id)  # ruleid: MLS301
            img, target = self._transforms(img, target)
        return img, target


def collate_fn(batch):
    batch = list(zip(*batch))
    batch[0] = nested_tensor_from_tensor_list(list(batch[0]))
    batch[1] = tuple(sorted(batch[1], key=lambda t: t["image_id"].item()))  # ruleid: MLS309
    return tuple(batch)


def worker_init_fn(worker_id):
    seed = torch.initial_seed() % 2**32
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)


def build_dataset(image_set, args):
    root = Path(args.coco_path)
    assert root.exists(), f"provided COCO path {root} does not exist"
    paths = {
        "train": (root / "train2017", root / "annotations" / "instances_train2017.json"),
        "val": (root / "val2017", root / "annotations" / "instances_val2017.json"),
    }
    img_folder, ann_file = paths[image_set]
    return CocoDetection(
        img_folder,
        ann_file,
        transforms=make_coco_transforms(image_set, occlusion_p=args.occlusion_p if image_set == "train" else 0.0),
        image_set=image_set,
        cache_dir=args.cache_dir,
        seed=args.seed,
        max_eval_objects=args.max_eval_objects if image_set == "val" else None,
    )


def build_loaders(args):
    dataset_train = build_dataset("train", args)
    dataset_val = build_dataset("val", args)

    if args.distributed:
        sampler_train = DistributedSampler(dataset_train, shuffle=True, seed=args.seed)
        sampler_val = DistributedSampler(dataset_val, shuffle=False)
    else:
        sampler_train = RandomSampler(dataset_train)
        sampler_val = SequentialSampler(dataset_val)

    batch_sampler_train = BatchSampler(sampler_train, args.batch_size, drop_last=True)
    loader_train = DataLoader(
        dataset_train,
        batch_sampler=batch_sampler_train,
        collate_fn=collate_fn,
        num_workers=args.num_workers,
        worker_init_fn=worker_init_fn,
        pin_memory=True,
        persistent_workers=args.num_workers > 0,
    )
    loader_val = DataLoader(dataset_val, args.batch_size, sampler=sampler_val, drop_last=False, collate_fn=collate_fn,
                            num_workers=args.num_workers, worker_init_fn=worker_init_fn, pin_memory=True)
    return dataset_train, dataset_val, sampler_train, loader_train, loader_val

