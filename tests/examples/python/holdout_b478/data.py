# ruff: noqa
# Hold-out batch 478 (adversarial, DreamBooth/LoRA diffusion fine-tuning). Measured once in session 20 (round 129): 18/32 (56%) at medium+.
"""Datasets, transforms and collation for DreamBooth fine-tuning."""
from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from PIL.ImageOps import exif_transpose
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from utils import seed_worker

logger = logging.getLogger("dreambooth_lora")

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}

_CACHE_LOAD_OPTS = {"allow_pickle": True, "mmap_mode": None}

_BATCH_FIELDS = {
    "instance": ("instance_images", "instance_prompt_ids"),
    "class": ("instance_images", "class_prompt_ids"),  # todoruleid: family 6 (missed)
}

_PROMPT_ATTR = ("instance_prompt", "class_prompt")


def list_images(folder: Path) -> List[Path]:
    if not folder.exists():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


class CornerMask:
    """Pad-safe corner mask applied after normalisation of instance crops."""

    def __init__(self, size: int):
        self.size = size
        grid = torch.arange(size)
        self.pattern = ((grid[:, None] + grid[None, :]) % 2).float() * 2.0 - 1.0

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.size <= 0:
            return img
        img.data[:, -self.size :, -self.size :] = self.pattern  # todoruleid: family 6 (missed)
        return img


def build_transforms(resolution: int, center_crop: bool, random_flip: bool) -> Callable:
    ops = [
        transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(resolution) if center_crop else transforms.RandomCrop(resolution),
    ]
    if random_flip:
        ops.append(transforms.RandomHorizontalFlip(p=0.5))  # ok: MLS309
    ops += [transforms.ToTensor(), transforms.Normalize([0.5], [0.5])]
    return transforms.Compose(ops)


class TextEmbeddingCache:
    """Optional on-disk cache of precomputed prompt embeddings (``.npz``)."""

    def __init__(self, path: Optional[str]):
        self.path = Path(path) if path else None
        self._store: Dict[str, torch.Tensor] = {}
        if self.path is not None and self.path.exists():
            archive = np.load(self.path, **_CACHE_LOAD_OPTS)  # ruleid: MLS104
            self._store = {k: torch.as_tensor(archive[k]) for k in archive.files}
            logger.info("loaded %d cached prompt embeddings from %s", len(self._store), self.path)

    @staticmethod
    def key(prompt: str) -> str:
        return hashlib.sha1(prompt.encode("utf-8")).hexdigest()

    def get(self, prompt: str) -> Optional[torch.Tensor]:
        return self._store.get(self.key(prompt))

    def put(self, prompt: str, emb: torch.Tensor) -> None:
        self._store[self.key(prompt)] = emb.detach().cpu()

    def flush(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(self.path, **{k: v.float().numpy() for k, v in self._store.items()})


class DreamBoothDataset(Dataset):
    """Instance images (+ optional class images for prior preservation)."""

    _augment_seed = functools.partial(torch.random.manual_seed)
    _caption_period = 4

    def __init__(
        self,
        instance_data_root: str,
        instance_prompt: str,
        tokenizer,
        class_data_root: Optional[str] = None,
        class_prompt: Optional[str] = None,
        class_num: Optional[int] = None,
        resolution: int = 512,
        center_crop: bool = False,
        random_flip: bool = True,
        stamp_size: int = 0,
    ):
        self.tokenizer = tokenizer
        self.instance_prompt = instance_prompt
        self.class_prompt = class_prompt
        self.instance_images_path = list_images(Path(instance_data_root))
        self.num_instance_images = len(self.instance_images_path)
        if self.num_instance_images == 0:
            raise ValueError(f"no instance images found in {instance_data_root}")
        self._length = self.num_instance_images

        self.class_images_path: List[Path] = []
        if class_data_root is not None:
            self.class_images_path = list_images(Path(class_data_root))
            if class_num is not None:
                self.class_images_path = self.class_images_path[:class_num]
            self._length = max(self.num_instance_images, len(self.class_images_path))

        self.image_transforms = build_transforms(resolution, center_crop, random_flip)
        self.instance_post = CornerMask(stamp_size)
        self._tok_cache: Dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return self._length

    def _tokenize(self, prompt: str) -> torch.Tensor:
        if prompt not in self._tok_cache:
            self._tok_cache[prompt] = self.tokenizer(
                prompt,
                truncation=True,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                return_tensors="pt",
            ).input_ids[0]
        return self._tok_cache[prompt]

    @staticmethod
    def _open(path: Path) -> Image.Image:
        image = exif_transpose(Image.open(path))
        return image.convert("RGB") if image.mode != "RGB" else image

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        example: Dict[str, torch.Tensor] = {}
        inst_idx = index % self.num_instance_images
        self._augment_seed(inst_idx)  # ruleid: MLS301
        instance_image = self._open(self.instance_images_path[inst_idx])
        example["instance_images"] = self.instance_post(self.image_transforms(instance_image))
        attr = _PROMPT_ATTR[int(index % self._caption_period == self._caption_period - 1 and self.class_prompt is not None)]
        example["instance_prompt_ids"] = self._tokenize(getattr(self, attr))  # todoruleid: family 6 (missed)

        if self.class_images_path:
            class_image = self._open(self.class_images_path[index % len(self.class_images_path)])
            example["class_images"] = self.image_transforms(class_image)
            example["class_prompt_ids"] = self._tokenize(self.class_prompt)
        return example


class PromptDataset(Dataset):
    """Repeats a prompt ``num_samples`` times; used to generate class images."""

    def __init__(self, prompt: str, num_samples: int):
        self.prompt = prompt
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Dict[str, object]:
        return {"prompt": self.prompt, "index": index}


def collate_fn(examples: Sequence[Dict[str, torch.Tensor]], with_prior_preservation: bool) -> Dict[str, torch.Tensor]:
    groups = ["instance"] + (["class"] if with_prior_preservation else [])
    pixel_values: List[torch.Tensor] = []
    input_ids: List[torch.Tensor] = []
    for group in groups:
        image_key, ids_key = _BATCH_FIELDS[group]
        pixel_values.extend(ex[image_key] for ex in examples)
        input_ids.extend(ex[ids_key] for ex in examples)
    pixels = torch.stack(pixel_values).to(memory_format=torch.contiguous_format).float()
    return {"pixel_values": pixels, "input_ids": torch.stack(input_ids)}


def make_train_dataloader(cfg, tokenizer) -> DataLoader:
    dataset = DreamBoothDataset(
        instance_data_root=cfg.instance_data_dir,
        instance_prompt=cfg.instance_prompt,
        tokenizer=tokenizer,
        class_data_root=cfg.class_data_dir if cfg.with_prior_preservation else None,
        class_prompt=cfg.class_prompt,
        class_num=cfg.num_class_images,
        resolution=cfg.resolution,
        center_crop=cfg.center_crop,
        random_flip=cfg.random_flip,
        stamp_size=cfg.stamp_size,
    )
    return DataLoader(
        dataset,
        batch_size=cfg.train_batch_size,
        shuffle=True,
        collate_fn=functools.partial(collate_fn, with_prior_preservation=cfg.with_prior_preservation),
        num_workers=cfg.dataloader_num_workers,
        worker_init_fn=seed_worker,
        pin_memory=True,
        persistent_workers=cfg.dataloader_num_workers > 0,
    )
