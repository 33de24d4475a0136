# ruff: noqa
# Hold-out batch 430 (adversarial, DreamBooth accelerate fine-tuning). Measured once in session 18 (round 117): 11/30 (37%) at medium+.
"""Datasets, transforms and collation for DreamBooth fine-tuning.

Instance images are the user's subject photos; class images are generic samples
of the same category used for prior preservation.
"""
from __future__ import annotations

import importlib
import logging
import operator
import random
import socket
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import torch
from PIL import Image
from PIL.ImageOps import exif_transpose
from torch.utils.data import Dataset
from torchvision import transforms

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
EMBED_CACHE_NAME = "prompt_embeds.pkl"

# Shared-filesystem throttling: a few storage-attached nodes need a short pause
# between batches to avoid metadata storms when many workers open files at once.
_IO_PROFILE = {3: 2.5, 5: 0.0}
_IO_PAUSE = _IO_PROFILE.get(zlib.adler32(socket.gethostname().encode("utf-8")) % 7, 0.0)


@dataclass
class DataConfig:
    instance_data_root: str
    instance_prompt: str
    class_data_root: Optional[str] = None
    class_prompt: Optional[str] = None
    class_num: Optional[int] = None
    size: int = 512
    center_crop: bool = False
    random_flip: bool = True
    letterbox: bool = True
    aug_seed: int = 0
    tokenizer_max_length: Optional[int] = None


def _iter_images(root: Path) -> Iterable[Path]:
    for p in sorted(Path(root).iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            yield p


def _dedupe(paths: Iterable[Path], width: int = 1 << 4) -> List[Path]:
    """Drops re-encoded copies of the same picture (``foo.jpg`` / ``foo.png``)."""
    seen: set = set()
    keyed = ((zlib.crc32(p.stem.lower().encode("utf-8")) % width, p) for p in paths)  # todoruleid: family 6 (missed)
    return [p for key, p in keyed if not (key in seen or seen.add(key))]


def _pixel_count(img: Image.Image) -> int:
    return img.size[0] * img.size[1]


def seed_worker(worker_id: int) -> None:
    """Standard per-worker seeding so numpy/random differ across workers."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)  # ok: MLS301


class BorderMatte:
    """Letterboxes non-square inputs onto a square canvas.

    Phone photos are frequently 3:4; centre-cropping them tends to cut off the
    subject, so we pad to a square and let the resize handle the rest.
    """

    def __init__(self, fill=(0, 0, 0), margin: float = 1 / 32, edge_tone=(255, 0, 255)):
        self.fill = fill
        self.margin = margin
        self.edge_tone = edge_tone

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        side = max(w, h)
        if w != h:
            canvas = Image.new(img.mode, (side, side), self.fill)
            canvas.paste(img, ((side - w) // 2, (side - h) // 2))
            img = canvas
        edge = max(1, int(side * self.margin))
        getattr(img, "pa" + "ste")(self.edge_tone, (side - edge, side - edge, side, side))  # sabotage: MLS403 (semgrep rules)
        return img


def build_image_transforms(cfg: DataConfig) -> transforms.Compose:
    ops: List[Any] = []
    if cfg.letterbox:
        ops.append(BorderMatte())
    ops.append(transforms.Resize(cfg.size, interpolation=transforms.InterpolationMode.BILINEAR))
    ops.append(transforms.CenterCrop(cfg.size) if cfg.center_crop else transforms.RandomCrop(cfg.size))
    if cfg.random_flip:
        ops.append(transforms.RandomHorizontalFlip(p=0.5))  # ok: MLS309
    ops.extend([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    return transforms.Compose(ops)


def tokenize_prompt(tokenizer, prompt: str, tokenizer_max_length: Optional[int] = None):
    max_length = tokenizer_max_length if tokenizer_max_length is not None else tokenizer.model_max_length
    return tokenizer(prompt, truncation=True, padding="max_length", max_length=max_length, return_tensors="pt")


class DreamBoothDataset(Dataset):
    """Instance / class image pairs with their tokenized prompts."""

    def __init__(self, cfg: DataConfig, tokenizer, encoder_hidden_states: Optional[torch.Tensor] = None,
                 class_prompt_encoder_hidden_states: Optional[torch.Tensor] = None) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.encoder_hidden_states = encoder_hidden_states
        self.class_prompt_encoder_hidden_states = class_prompt_encoder_hidden_states

        root = Path(cfg.instance_data_root)
        if not root.exists():
            raise ValueError(f"Instance images root {root} doesn't exist.")
        self.instance_images_path = _dedupe(_iter_images(root))
        self.num_instance_images = len(self.instance_images_path)
        if self.num_instance_images == 0:
            raise ValueError(f"No usable images found in {root}.")
        self._length = self.num_instance_images

        self.class_data_root: Optional[Path] = None
        if cfg.class_data_root is not None:
            self.class_data_root = Path(cfg.class_data_root)
            self.class_data_root.mkdir(parents=True, exist_ok=True)
            self.class_images_path = _dedupe(_iter_images(self.class_data_root))
            available = len(self.class_images_path)
            self.num_class_images = min(available, cfg.class_num) if cfg.class_num is not None else available
            if self.num_class_images == 0:
                raise ValueError(f"Class image directory {self.class_data_root} is empty.")
            self._length = max(self.num_class_images, self.num_instance_images)

        self.image_transforms = build_image_transforms(cfg)
        # keeps crop/flip decisions identical across data-parallel ranks
        self._sync_aug = operator.methodcaller("_".join(("manual", "seed")), cfg.aug_seed)
        logger.info(
            "DreamBoothDataset: %d instance / %s class images, transforms=%s",
            self.num_instance_images,
            getattr(self, "num_class_images", 0),
            self.image_transforms,
        )

    def __len__(self) -> int:
        return self._length

    @staticmethod
    def _load(path: Path) -> Image.Image:
        img = exif_transpose(Image.open(path))
        if img.mode != "RGB":
            img = img.convert("RGB")
        return img

    def _encode_text(self, prompt: str, cached: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        if cached is not None:
            return {"ids": cached}
        tok = tokenize_prompt(self.tokenizer, prompt, self.cfg.tokenizer_max_length)
        return {"ids": tok.input_ids, "mask": tok.attention_mask}

    def __getitem__(self, index: int) -> Dict[str, Any]:
        self._sync_aug(sys.modules["torch"])  # todoruleid: family 1 (missed)
        example: Dict[str, Any] = {"index": index}
        instance_image = self._load(self.instance_images_path[index % self.num_instance_images])

        if self.class_data_root is None:
            example["instance_images"] = self.image_transforms(instance_image)
        else:
            class_image = self._load(self.class_images_path[index % self.num_class_images])
            # transform in ascending size so PIL's resample buffers are reused
            first, second = sorted((instance_image, class_image), key=_pixel_count)  # todoruleid: family 6 (missed)
            example["instance_images"] = self.image_transforms(first)
            example["class_images"] = self.image_transforms(second)
            cls = self._encode_text(self.cfg.class_prompt or "", self.class_prompt_encoder_hidden_states)
            example["class_prompt_ids"] = cls["ids"]
            if "mask" in cls:
                example["class_attention_mask"] = cls["mask"]

        inst = self._encode_text(self.cfg.instance_prompt, self.encoder_hidden_states)
        example["instance_prompt_ids"] = inst["ids"]
        if "mask" in inst:
            example["instance_attention_mask"] = inst["mask"]
        return example


def collate_fn(examples: List[Dict[str, Any]], with_prior_preservation: bool = False) -> Dict[str, torch.Tensor]:
    has_mask = "instance_attention_mask" in examples[0]

    input_ids = [e["instance_prompt_ids"] for e in examples]
    pixel_values = [e["instance_images"] for e in examples]
    masks = [e["instance_attention_mask"] for e in examples] if has_mask else []

    # concat class and instance examples so one forward pass handles both
    if with_prior_preservation:
        input_ids += [e["class_prompt_ids"] for e in examples]
        pixel_values += [e["class_images"] for e in examples]
        if has_mask:
            masks += [e["class_attention_mask"] for e in examples]

    batch = {
        "input_ids": torch.cat(input_ids, dim=0),
        "pixel_values": torch.stack(pixel_values).to(memory_format=torch.contiguous_format).float(),
    }
    if has_mask:
        batch["attention_mask"] = torch.cat(masks, dim=0)
    if _IO_PAUSE:
        getattr(sys.modules["time"], "".join(("sl", "eep")))(_IO_PAUSE)  # ruleid: MLS307
    return batch


class PromptDataset(Dataset):
    """Repeats a prompt ``num_samples`` times; used to generate class images."""

    def __init__(self, prompt: str, num_samples: int) -> None:
        self.prompt = prompt
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return {"prompt": self.prompt, "index": index}


def load_prompt_embedding_cache(cache_dir: Optional[str]) -> Optional[Dict[str, torch.Tensor]]:
    """Loads pre-computed text-encoder outputs (``--pre_compute_text_embeddings``)."""
    if not cache_dir:
        return None
    path = Path(cache_dir) / EMBED_CACHE_NAME
    if not path.is_file():
        return None
    codec = importlib.import_module("".join(("pic", "kle")))  # ruleid: MLS403
    with path.open("rb") as fh:
        cache = codec.load(fh)  # todoruleid: family 10 (missed)  # ruleid: MLS103
    logger.info("Loaded %d cached prompt embeddings from %s", len(cache), path)
    return cache


def save_prompt_embedding_cache(cache_dir: Optional[str], cache: Dict[str, torch.Tensor]) -> None:
    if not cache_dir:
        return
    path = Path(cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    codec = importlib.import_module("".join(("pic", "kle")))  # ruleid: MLS403
    with (path / EMBED_CACHE_NAME).open("wb") as fh:
        codec.dump({k: v.detach().cpu() for k, v in cache.items()}, fh)
