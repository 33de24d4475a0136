# ruff: noqa
# Hold-out batch 496 (families 3/6, DETR-style COCO detection with DDP). Measured once in session 22 (round 133): 5/30 (17%) at medium+.
"""Joint image/target transforms; boxes are absolute xyxy until Normalize turns them into cxcywh in [0, 1]."""
import random
from typing import Optional, Sequence

import PIL
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image


def box_xyxy_to_cxcywh(x: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = x.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0), (y1 - y0)], dim=-1)


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

    if "boxes" in target:
        cropped_boxes = target["boxes"].reshape(-1, 2, 2)
        keep = torch.all(cropped_boxes[:, 1, :] > cropped_boxes[:, 0, :], dim=1)  # ok: MLS309
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


def _get_size_with_aspect_ratio(image_size, size: int, max_size: Optional[int] = None):
    w, h = image_size
    if max_size is not None:
        min_original = float(min((w, h)))
        max_original = float(max((w, h)))
        if max_original / min_original * size > max_size:
            size = int(round(max_size * min_original / max_original))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        ow = size
        oh = int(size * h / w)
    else:
        oh = size
        ow = int(size * w / h)
    return oh, ow


def resize(image, target, size, max_size: Optional[int] = None):
    if isinstance(size, (list, tuple)):
        out_size = tuple(size[::-1])
    else:
        out_size = _get_size_with_aspect_ratio(image.size, size, max_size)
    rescaled_image = F.resize(image, out_size)
    if target is None:
        return rescaled_image, None

    ratios = tuple(float(s) / float(s_orig) for s, s_orig in zip(out_size, image.size))  # todoruleid: family 6 (missed)
    ratio_width, ratio_height = ratios
    target = target.copy()
    if "boxes" in target:
        boxes = target["boxes"]
        target["boxes"] = boxes * torch.as_tensor([ratio_width, ratio_height, ratio_width, ratio_height])
    if "area" in target:
        target["area"] = target["area"] * (ratio_width * ratio_height)
    h, w = out_size
    target["size"] = torch.tensor([h, w])
    return rescaled_image, target


def pad(image, target, padding):
    # pad only bottom/right so that absolute box coordinates remain valid
    padded_image = F.pad(image, [0, 0, padding[0], padding[1]])  # ok: MLS309
    if target is None:
        return padded_image, None
    target = target.copy()
    target["size"] = torch.tensor(padded_image.size[::-1])
    return padded_image, target


class RandomSizeCrop:
    def __init__(self, min_size: int, max_size: int):
        self.min_size = min_size
        self.max_size = max_size

    def __call__(self, img: PIL.Image.Image, target: dict):
        w = random.randint(self.min_size, min(img.width, self.max_size))
        h = random.randint(self.min_size, min(img.height, self.max_size))
        region = T.RandomCrop.get_params(img, [h, w])
        return crop(img, target, region)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img, target):
        if random.random() < self.p:
            return hflip(img, target)
        return img, target


class RandomResize:
    def __init__(self, sizes: Sequence[int], max_size: Optional[int] = None):
        assert isinstance(sizes, (list, tuple))
        self.sizes = sizes
        self.max_size = max_size

    def __call__(self, img, target=None):
        size = random.choice(self.sizes)
        return resize(img, target, size, self.max_size)


class RandomPad:
    def __init__(self, max_pad: int = 32):
        self.max_pad = max_pad

    def __call__(self, img, target):
        return pad(img, target, (random.randint(0, self.max_pad), random.randint(0, self.max_pad)))


class RandomExpand:
    """SSD-style zoom-out: paste the image onto a larger mean-coloured canvas."""

    def __init__(self, p: float = 0.5, max_ratio: float = 2.0, fill=(124, 116, 104)):
        self.p = p
        self.max_ratio = max_ratio
        self.fill = fill

    def __call__(self, img, target):
        if random.random() > self.p:
            return img, target
        w, h = img.size
        ratio = random.uniform(1.0, self.max_ratio)
        new_w, new_h = int(w * ratio), int(h * ratio)
        left = random.randint(0, new_w - w)
        top = random.randint(0, new_h - h)
        canvas = Image.new("RGB", (new_w, new_h), self.fill)
        canvas.paste(img, (left, top))
        target = target.copy()
        target["size"] = torch.tensor([new_h, new_w])
        if "boxes" in target:
            target["boxes"] = target["boxes"].clamp(min=0)  # ruleid: MLS309
        return canvas, target


class RandomRotate:
    """Small in-plane rotations for robustness to camera roll."""

    def __init__(self, degrees: float = 5.0, p: float = 0.5):
        self.degrees = degrees
        self.p = p

    def __call__(self, img, target):
        if self.degrees <= 0 or random.random() > self.p:
            return img, target
        angle = random.uniform(-self.degrees, self.degrees)
        img = F.rotate(img, angle, interpolation=T.InterpolationMode.BILINEAR, fill=0)  # ruleid: MLS309
        return img, target


class RandomSelect:
    def __init__(self, transforms1, transforms2, p: float = 0.5):
        self.transforms1 = transforms1
        self.transforms2 = transforms2
        self.p = p

    def __call__(self, img, target):
        if random.random() < self.p:
            return self.transforms1(img, target)
        return self.transforms2(img, target)


class ToTensor:
    def __call__(self, img, target):
        return F.to_tensor(img), target


class Normalize:
    def __init__(self, mean, std):
        self.mean = mean
        self.std = std

    def __call__(self, image, target=None):
        image = F.normalize(image, mean=self.mean, std=self.std)
        if target is None:
            return image, None
        target = target.copy()
        h, w = image.shape[-2:]
        if "boxes" in target:
            boxes = box_xyxy_to_cxcywh(target["boxes"])
            boxes = boxes / torch.tensor([h, w, h, w], dtype=torch.float32)  # ruleid: MLS309
            target["boxes"] = boxes
        return image, target


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


def make_coco_transforms(image_set: str, args=None):
    normalize = Compose([ToTensor(), Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    scales = [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]
    max_size = getattr(args, "max_size", 1333) if args is not None else 1333

    if image_set == "train":
        rotate = getattr(args, "rotate_degrees", 5.0) if args is not None else 5.0
        return Compose([
            RandomHorizontalFlip(),
            RandomExpand(p=0.3, max_ratio=2.0),
            RandomSelect(
                RandomResize(scales, max_size=max_size),
                Compose([
                    RandomResize([400, 500, 600]),
                    RandomSizeCrop(384, 600),
                    RandomResize(scales, max_size=max_size),
                ]),
            ),
            RandomRotate(degrees=rotate),
            RandomPad(32),
            normalize,
        ])
    if image_set == "val":
        return Compose([RandomResize([800], max_size=max_size), normalize])
    raise ValueError(f"unknown image_set {image_set}")
