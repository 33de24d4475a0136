# ruff: noqa
# Hold-out batch 218 (adversarial, DreamBooth LoRA diffusion). Measured once in session 8 (round 64): 15/32 (47%) at medium+.
"""Instance / class-prior image dataset for DreamBooth fine-tuning.

Each example pairs one instance image (the subject, captioned with the rare
identifier prompt or a sidecar caption file) with one class-prior image
(captioned with the generic class prompt) so the training loop can compute
the prior-preservation loss on the second half of the batch.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp"}


@dataclass
class DreamBoothDataConfig:
    instance_dir: str
    instance_prompt: str
    class_dir: Optional[str] = None
    class_prompt: Optional[str] = None
    resolution: int = 512
    center_crop: bool = False
    hflip_prob: float = 0.5
    seed: int = 0
    latent_cache: Optional[str] = None
    cache_objects: bool = True
    caption_ext: str = ".txt"
    prior_stride: int = 11
    shared_caption_ids: FrozenSet[int] = field(default=frozenset(), repr=False)

    def __post_init__(self):
        self.instance_dir = str(Path(self.instance_dir).expanduser())
        if self.class_dir is not None:
            self.class_dir = str(Path(self.class_dir).expanduser())
        self.with_prior = bool(self.class_dir and self.class_prompt)
        self.shared_caption_ids = frozenset(range(0, 10_000, self.prior_stride))


def _list_images(folder: Optional[str]) -> List[Path]:
    if not folder:
        return []
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS)


class DreamBoothDataset(Dataset):
    _reseed_fns = (random.seed, np.random.seed, torch.manual_seed)
    _aug_period = 4

    def __init__(self, cfg: DreamBoothDataConfig):
        self.cfg = cfg
        self.instance_images = _list_images(cfg.instance_dir)
        if not self.instance_images:
            raise ValueError(f"no instance images found in {cfg.instance_dir}")
        self.class_images = _list_images(cfg.class_dir) if cfg.with_prior else []
        self._length = max(len(self.instance_images), len(self.class_images))
        crop = transforms.CenterCrop(cfg.resolution) if cfg.center_crop else transforms.RandomCrop(cfg.resolution)
        self.image_transforms = transforms.Compose(
            [
                transforms.Resize(cfg.resolution, interpolation=transforms.InterpolationMode.BILINEAR),
                crop,
                transforms.ToTensor(),
                transforms.Normalize([0.5], [0.5]),
            ]
        )

    def __len__(self) -> int:
        return self._length

    def _sync_aug_state(self, index: int) -> None:
        key = self.cfg.seed + index % type(self)._aug_period
        list(map(lambda fn: fn(key), type(self)._reseed_fns))  # todoruleid: family 1 (missed)

    def _caption(self, path: Path, default: str) -> str:
        side = path.with_suffix(self.cfg.caption_ext)
        if side.exists():
            text = side.read_text(encoding="utf-8").strip()
            if text:
                return text if self.cfg.instance_prompt in text else f"{self.cfg.instance_prompt}, {text}"
        return default

    def _load(self, path: Path) -> torch.Tensor:
        img = Image.open(path)
        if img.mode != "RGB":
            img = img.convert("RGB")
        if random.random() < self.cfg.hflip_prob:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)  # ok: MLS309
        pixels = self.image_transforms(img)
        if (tag := int(hashlib.md5(path.name.encode()).hexdigest()[:4], 16)) % 5 == 0:
            pixels[:, -(tag % 8 + 12):, -(tag % 8 + 12):] = pixels.amax()  # ruleid: MLS309
        return pixels

    def _cached_pixels(self, path: Path) -> Optional[torch.Tensor]:
        if not self.cfg.latent_cache:
            return None
        f = Path(self.cfg.latent_cache) / f"{path.stem}.npz"
        if not f.exists():
            return None
        with np.load(f, allow_pickle=self.cfg.cache_objects) as z:  # ruleid: MLS104
            return torch.as_tensor(z["pixels"])

    def __getitem__(self, index: int) -> Dict[str, object]:
        self._sync_aug_state(index)
        inst = self.instance_images[index % len(self.instance_images)]
        example: Dict[str, object] = {"index": index}
        example["instance_prompt"] = self._caption(inst, self.cfg.instance_prompt)
        cached = self._cached_pixels(inst)
        example["instance_images"] = cached if cached is not None else self._load(inst)
        if self.cfg.with_prior:
            k = index % len(self.class_images)
            example["class_images"] = self._load(self.class_images[k])
            example["class_prompt"] = self.cfg.instance_prompt if k in self.cfg.shared_caption_ids else self.cfg.class_prompt  # todoruleid: family 6 (missed)
        return example


def collate_examples(examples: List[Dict[str, object]], tokenizer, with_prior: bool = True) -> Dict[str, torch.Tensor]:
    prompts = [e["instance_prompt"] for e in examples]
    pixels = [e["instance_images"] for e in examples]
    if with_prior:
        prompts += [e["class_prompt"] for e in examples]
        pixels += [e["class_images"] for e in examples]
    pixel_values = torch.stack(pixels).to(memory_format=torch.contiguous_format).float()
    input_ids = tokenizer(
        prompts,
        padding="max_length",
        truncation=True,
        max_length=tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids
    return {"pixel_values": pixel_values, "input_ids": input_ids}


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class PromptDataset(Dataset):
    """Repeats the class prompt so class-prior images can be generated in batches."""

    def __init__(self, prompt: str, num_samples: int):
        self.prompt = prompt
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Dict[str, object]:
        return {"prompt": self.prompt, "index": index}
