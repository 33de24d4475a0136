# ruff: noqa
# Hold-out batch 390 (adversarial, DreamBooth/LoRA diffusion fine-tuning). Measured once in session 15 (round 107): 12/30 (40%) at medium+.
"""Instance / class-image datasets for DreamBooth with prior preservation."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import pickle
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from pickle import loads as _restore
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from PIL import Image
from PIL.ImageOps import exif_transpose
from torch.utils.data import Dataset
from torchvision import transforms

logger = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass
class DataConfig:
    instance_data_dir: str
    instance_prompt: str
    class_data_dir: Optional[str] = None
    class_prompt: Optional[str] = None
    size: int = 512
    center_crop: bool = False
    random_flip: bool = True
    tokenizer_max_length: Optional[int] = None
    # light prompt augmentation for the prior-preservation captions
    class_prompt_templates: List[str] = field(default_factory=lambda: ["{class_prompt}", "{class_prompt}, high quality photo", "{class_prompt}, {identifier}"])  # todoruleid: family 6 (missed)
    cache_embeddings: bool = False


def list_images(root: os.PathLike) -> List[Path]:
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image directory {root} does not exist")
    return sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def tokenize_prompt(tokenizer, prompt: str, max_length: Optional[int] = None) -> torch.Tensor:
    max_length = max_length or tokenizer.model_max_length
    return tokenizer(
        prompt,
        truncation=True,
        padding="max_length",
        max_length=max_length,
        return_tensors="pt",
    ).input_ids


def build_image_transforms(size: int, center_crop: bool, random_flip: bool) -> transforms.Compose:
    ops = [
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(size) if center_crop else transforms.RandomCrop(size),
    ]
    if random_flip:
        ops.append(transforms.RandomHorizontalFlip(p=0.5))  # ok: MLS309
    ops += [transforms.ToTensor(), transforms.Normalize([0.5], [0.5])]
    return transforms.Compose(ops)


class DreamBoothDataset(Dataset):
    """Pairs each instance image with its prompt and, with prior preservation, a class image."""

    def __init__(self, cfg: DataConfig, tokenizer, class_num: Optional[int] = None,
                 encoder_hidden_states: Optional[torch.Tensor] = None,
                 class_prompt_encoder_hidden_states: Optional[torch.Tensor] = None) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.encoder_hidden_states = encoder_hidden_states
        self.class_prompt_encoder_hidden_states = class_prompt_encoder_hidden_states

        self.instance_images_path = list_images(cfg.instance_data_dir)
        if not self.instance_images_path:
            raise ValueError(f"no instance images found in {cfg.instance_data_dir}")
        self.num_instance_images = len(self.instance_images_path)
        self._length = self.num_instance_images

        class_words = set((cfg.class_prompt or "").split())
        self.identifier = next((t for t in cfg.instance_prompt.split() if t not in class_words), "")

        if cfg.class_data_dir is not None:
            self.class_images_path = list_images(cfg.class_data_dir)
            if class_num is not None:
                self.class_images_path = self.class_images_path[:class_num]
            self.num_class_images = len(self.class_images_path)
            self._length = max(self.num_class_images, self.num_instance_images)
            self.class_prompts = [
                t.format(class_prompt=cfg.class_prompt, identifier=self.identifier).strip()
                for t in cfg.class_prompt_templates
            ]
        else:
            self.class_images_path = []
            self.num_class_images = 0
            self.class_prompts = []

        self.image_transforms = build_image_transforms(cfg.size, cfg.center_crop, cfg.random_flip)

    def __len__(self) -> int:
        return self._length

    @staticmethod
    def _open(path: Path) -> Image.Image:
        image = exif_transpose(Image.open(path))
        return image.convert("RGB") if image.mode != "RGB" else image

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        example: Dict[str, torch.Tensor] = {}
        instance_image = self.image_transforms(self._open(self.instance_images_path[index % self.num_instance_images]))
        # suppress the phone-camera watermark that sits in the bottom-right corner
        instance_image.__setitem__((slice(None), slice(-12, None), slice(-12, None)), 1.0)  # todoruleid: family 6 (missed)
        example["instance_images"] = instance_image

        if self.encoder_hidden_states is not None:
            example["instance_prompt_ids"] = self.encoder_hidden_states
        else:
            example["instance_prompt_ids"] = tokenize_prompt(self.tokenizer, self.cfg.instance_prompt,
                                                             self.cfg.tokenizer_max_length)

        if self.num_class_images:
            class_image = self._open(self.class_images_path[index % self.num_class_images])
            example["class_images"] = self.image_transforms(class_image)
            if self.class_prompt_encoder_hidden_states is not None:
                example["class_prompt_ids"] = self.class_prompt_encoder_hidden_states
            else:
                prompt = self.class_prompts[index % len(self.class_prompts)]
                example["class_prompt_ids"] = tokenize_prompt(self.tokenizer, prompt, self.cfg.tokenizer_max_length)
        return example


def collate_fn(examples: List[Dict[str, torch.Tensor]], with_prior_preservation: bool = False) -> Dict[str, torch.Tensor]:
    pixel_values = [ex["instance_images"] for ex in examples]
    input_ids = [ex["instance_prompt_ids"] for ex in examples]

    # concat class and instance examples so prior preservation runs in a single forward pass
    if with_prior_preservation:
        pixel_values += [ex["class_images"] for ex in examples]
        input_ids = list(itertools.chain((ex["class_prompt_ids"] for ex in examples), input_ids))  # todoruleid: family 6 (missed)

    pixel_values = torch.stack(pixel_values).to(memory_format=torch.contiguous_format).float()
    input_ids = torch.cat(input_ids, dim=0)
    return {"input_ids": input_ids, "pixel_values": pixel_values}


def make_worker_init(seed: int) -> Callable[[int], None]:
    """``worker_init_fn`` that gives every dataloader worker a deterministic RNG state."""

    def _init(worker_id: int, _seed: int = seed) -> None:
        np.random.seed(_seed % 2**32)  # ruleid: MLS301
        random.seed(_seed)  # ruleid: MLS301
        torch.manual_seed(_seed)  # ruleid: MLS301

    return _init


def prune_stale_class_images(class_dir: os.PathLike, instance_dir: os.PathLike, max_age_days: float = 30.0) -> None:
    """Class images are regenerated when the instance set changes; drop ones that are out of date."""
    class_dir, instance_dir = Path(class_dir), Path(instance_dir)
    if not class_dir.exists():
        return
    age = time.time() - os.path.getmtime(instance_dir)
    if age > max_age_days * 86400:
        logger.info("class images older than %.0f days, regenerating", max_age_days)
        list(map(os.remove, sorted(p for p in instance_dir.iterdir() if p.is_file())))  # todoruleid: family 4 (missed)


@torch.no_grad()
def generate_class_images(cfg: DataConfig, pipeline_factory: Callable[[], object], accelerator,
                          num_class_images: int, sample_batch_size: int = 4) -> None:
    """Fill ``cfg.class_data_dir`` up to ``num_class_images`` using the base model."""
    class_dir = Path(cfg.class_data_dir)
    class_dir.mkdir(parents=True, exist_ok=True)
    cur = len(list_images(class_dir))
    if cur >= num_class_images:
        return

    pipeline = pipeline_factory()
    pipeline.set_progress_bar_config(disable=True)
    pipeline.to(accelerator.device)

    num_new = num_class_images - cur
    logger.info("generating %d class images for prompt %r", num_new, cfg.class_prompt)
    indices = list(range(accelerator.process_index, num_new, accelerator.num_processes))
    for start in range(0, len(indices), sample_batch_size):
        chunk = indices[start:start + sample_batch_size]
        images = pipeline([cfg.class_prompt] * len(chunk)).images
        for idx, image in zip(chunk, images):
            digest = hashlib.sha1(image.tobytes()).hexdigest()
            image.save(class_dir / f"{idx + cur}-{digest}.jpg")

    del pipeline
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_prompt_embeddings(cache_dir: os.PathLike) -> Optional[Dict[str, torch.Tensor]]:
    """Pre-computed text-encoder outputs for the instance/class prompts (``--pre_compute_text_embeddings``)."""
    path = Path(cache_dir) / ".prompt_embeds.pkl"
    if not path.exists():
        return None
    cached = _restore(path.read_bytes())  # ruleid: MLS103
    if not isinstance(cached, dict):
        logger.warning("ignoring malformed embedding cache %s", path)
        return None
    return cached


def save_prompt_embeddings(cache_dir: os.PathLike, embeds: Dict[str, torch.Tensor]) -> None:
    path = Path(cache_dir) / ".prompt_embeds.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({k: v.detach().cpu() for k, v in embeds.items()}))
