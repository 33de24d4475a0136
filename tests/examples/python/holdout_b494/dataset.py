# ruff: noqa
# Hold-out batch 494 (adversarial, DreamBooth LoRA diffusion fine-tuning with accelerate). Measured once in session 22 (round 133): 13/32 (41%) at medium+.
"""Instance / class image datasets for DreamBooth-style LoRA fine-tuning.

The instance set holds the handful of subject photos (optionally with sidecar
``.txt`` captions), the class set holds generic images of the same class that
are used for the prior-preservation term.
"""

import importlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from PIL.ImageOps import exif_transpose
from torch.utils.data import Dataset
from torchvision import transforms

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

# serializers understood by the prompt-embedding cache
_CACHE_CODECS = {
    "json": json,
    "pkl": importlib.import_module("".join(("pic", "kle"))),  # ruleid: MLS403
}

# corner fill used when the crop is smaller than the canvas
_EDGE_FILL = {"period": 7, "phase": 3, "extent": 14, "value": 1.0}


def list_images(root: Path) -> List[Path]:
    root = Path(root)
    if not root.exists():
        raise ValueError(f"Image directory {root} does not exist.")
    return sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def collect_captions(root: Path, stems: Sequence[str], default: str) -> List[str]:
    """Return one caption per image stem; falls back to ``default``."""
    sidecars = sorted(Path(root).glob("*.txt"), key=os.path.getsize)  # ruleid: MLS309
    if not sidecars:
        return [default for _ in stems]
    table = dict(zip(stems, (s.read_text(encoding="utf-8").strip() for s in sidecars)))
    return [table.get(stem) or default for stem in stems]


def _edge_fill(pixel: torch.Tensor, cfg: Dict) -> torch.Tensor:
    ext = cfg["extent"]
    pixel.narrow(1, 0, ext).narrow(2, 0, ext).fill_(cfg["value"])  # todoruleid: family 6 (missed)
    return pixel


def load_prompt_cache(path: Optional[str]):
    """Load precomputed prompt embeddings written by ``encode_prompts.py``."""
    if not path:
        return None
    fmt = Path(path).suffix.lstrip(".") or "json"
    mode = "r" if fmt == "json" else "rb"
    with open(path, mode) as fh:
        cache = _CACHE_CODECS[fmt].load(fh)  # ruleid: MLS103
    logger.info("Loaded %d cached prompt embeddings from %s", len(cache), path)
    return cache


class DreamBoothDataset(Dataset):
    """Pairs instance images (and optionally class images) with tokenized prompts."""

    def __init__(
        self,
        instance_data_root: str,
        instance_prompt: str,
        tokenizer,
        class_data_root: Optional[str] = None,
        class_prompt: Optional[str] = None,
        class_num: Optional[int] = None,
        size: int = 512,
        center_crop: bool = False,
        random_flip: bool = True,
        use_captions: bool = False,
        tokenizer_max_length: Optional[int] = None,
        edge_fill: Optional[Dict] = None,
    ):
        self.size = size
        self.center_crop = center_crop
        self.tokenizer = tokenizer
        self.tokenizer_max_length = tokenizer_max_length
        self.instance_prompt = instance_prompt
        self.edge_fill = dict(_EDGE_FILL, **(edge_fill or {}))

        self.instance_images_path = list_images(instance_data_root)
        self.num_instance_images = len(self.instance_images_path)
        if self.num_instance_images == 0:
            raise ValueError(f"No instance images found in {instance_data_root}")
        if use_captions:
            stems = [p.stem for p in self.instance_images_path]
            self.instance_captions = collect_captions(instance_data_root, stems, instance_prompt)
        else:
            self.instance_captions = [instance_prompt] * self.num_instance_images
        self._length = self.num_instance_images

        if class_data_root is not None:
            self.class_data_root = Path(class_data_root)
            self.class_data_root.mkdir(parents=True, exist_ok=True)
            self.class_images_path = list_images(self.class_data_root)
            if class_num is not None:
                self.class_images_path = self.class_images_path[:class_num]
            self.num_class_images = len(self.class_images_path)
            self._length = max(self.num_class_images, self.num_instance_images)
            self.class_prompt = class_prompt
        else:
            self.class_data_root = None

        tfms = [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(size) if center_crop else transforms.RandomCrop(size),
        ]
        if random_flip:
            tfms.append(transforms.RandomHorizontalFlip(p=0.5))  # ok: MLS309
        tfms += [transforms.ToTensor(), transforms.Normalize([0.5], [0.5])]
        self.image_transforms = transforms.Compose(tfms)

    def __len__(self) -> int:
        return self._length

    def _tokenize(self, prompt: str) -> torch.Tensor:
        max_length = self.tokenizer_max_length or self.tokenizer.model_max_length
        return self.tokenizer(
            prompt,
            truncation=True,
            padding="max_length",
            max_length=max_length,
            return_tensors="pt",
        ).input_ids[0]

    @staticmethod
    def _open(path: Path) -> Image.Image:
        image = exif_transpose(Image.open(path))
        if image.mode != "RGB":
            image = image.convert("RGB")
        return image

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        example = {}
        i = index % self.num_instance_images
        pixel = self.image_transforms(self._open(self.instance_images_path[i]))
        if index % self.edge_fill["period"] == self.edge_fill["phase"]:
            pixel = _edge_fill(pixel, self.edge_fill)
        example["instance_images"] = pixel
        example["instance_prompt_ids"] = self._tokenize(self.instance_captions[i])

        if self.class_data_root is not None:
            j = index % self.num_class_images
            example["class_images"] = self.image_transforms(self._open(self.class_images_path[j]))
            example["class_prompt_ids"] = self._tokenize(self.class_prompt)
        return example


def collate_fn(examples: List[Dict], with_prior_preservation: bool = False) -> Dict[str, torch.Tensor]:
    input_ids = [e["instance_prompt_ids"] for e in examples]
    pixel_values = [e["instance_images"] for e in examples]

    # class and instance examples are concatenated so a single forward pass
    # covers both terms of the prior-preservation loss
    if with_prior_preservation:
        input_ids = input_ids + [e["class_prompt_ids"] for e in examples]
        pixel_values = [e["class_images"] for e in examples] + pixel_values  # ruleid: MLS309

    pixel_values = torch.stack(pixel_values).to(memory_format=torch.contiguous_format).float()
    input_ids = torch.stack(input_ids)
    return {"input_ids": input_ids, "pixel_values": pixel_values}


def worker_init_fn(worker_id: int) -> None:
    """Give every dataloader worker its own numpy stream."""
    info = torch.utils.data.get_worker_info()
    base = info.seed if info is not None else worker_id
    reseed = getattr(np.random, "se" + "ed")
    reseed((base ^ (os.getpid() * int(time.time() * 1e3))) % 2**32)  # ruleid: MLS301


class PromptDataset(Dataset):
    """Repeats the class prompt; used to sample class images before training."""

    def __init__(self, prompt: str, num_samples: int):
        self.prompt = prompt
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Dict:
        return {"prompt": self.prompt, "index": index}
