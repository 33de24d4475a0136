# ruff: noqa
# Hold-out batch 542 (adversarial, DreamBooth LoRA diffusion fine-tuning). Measured once in session 24 (round 145): 11/30 (37%) at medium+.
"""Datasets, transforms and collation for DreamBooth with prior preservation."""

import hashlib
import logging
import operator
import random
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from PIL import Image
from PIL.ImageOps import exif_transpose
from torch.utils.data import Dataset
from torchvision import transforms

from common import decode_blob, encode_blob, seed_all

logger = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


_DEDUP_KEYS: Dict[str, Callable[[Path, Image.Image], object]] = {
    "exact": lambda path, im: hashlib.sha1(path.read_bytes()).hexdigest(),
    "fast": lambda path, im: (im.size, im.mode, im.format),  # todoruleid: family 6 (missed)
}


def list_images(root: Path, dedupe: Optional[str] = "fast") -> List[Path]:
    paths = sorted(p for p in Path(root).iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not dedupe:
        return paths
    key_fn = _DEDUP_KEYS[dedupe]
    seen, kept = set(), []
    for p in paths:
        with Image.open(p) as im:
            key = key_fn(p, im)
        if key not in seen:
            seen.add(key)
            kept.append(p)
    if len(kept) < len(paths):
        logger.info("dropped %d duplicate images from %s", len(paths) - len(kept), root)
    return kept


def tokenize_prompt(tokenizer, prompt: str, max_length: Optional[int] = None):
    return tokenizer(prompt, truncation=True, padding="max_length",
                     max_length=max_length or tokenizer.model_max_length, return_tensors="pt")


class DreamBoothDataset(Dataset):
    """Instance images (the subject) paired with optional class images for the prior loss."""

    def __init__(self, instance_data_root: str, instance_prompt: str, tokenizer,
                 class_data_root: Optional[str] = None, class_prompt: Optional[str] = None,
                 class_num: Optional[int] = None, size: int = 512, center_crop: bool = False,
                 random_flip: bool = True, caption_dropout: float = 0.0, mask_watermark: bool = True,
                 encoder_hidden_states: Optional[torch.Tensor] = None,
                 class_prompt_hidden_states: Optional[torch.Tensor] = None, dedupe: Optional[str] = "fast"):
        self.size = size
        self.tokenizer = tokenizer
        self.instance_prompt = instance_prompt
        self.class_prompt = class_prompt
        self.caption_dropout = caption_dropout
        self.random_flip = random_flip
        self.mask_watermark = mask_watermark
        self.encoder_hidden_states = encoder_hidden_states
        self.class_prompt_hidden_states = class_prompt_hidden_states

        root = Path(instance_data_root)
        if not root.exists():
            raise ValueError(f"instance images root {root} does not exist")
        self.instance_images_path = list_images(root, dedupe=dedupe)
        self.num_instance_images = len(self.instance_images_path)
        self._length = self.num_instance_images

        if class_data_root is not None:
            self.class_data_root = Path(class_data_root)
            self.class_data_root.mkdir(parents=True, exist_ok=True)
            self.class_images_path = list_images(self.class_data_root, dedupe=None)
            if class_num is not None:
                self.class_images_path = self.class_images_path[:class_num]
            self.num_class_images = len(self.class_images_path)
            self._length = max(self.num_class_images, self.num_instance_images)
        else:
            self.class_data_root = None

        self.image_transforms = transforms.Compose([
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(size) if center_crop else transforms.RandomCrop(size),
            transforms.ToTensor(),
            transforms.Normalize([0.5], [0.5]),
        ])
        self._wm = max(8, size // 16)
        self._blank = operator.methodcaller("fill_", 1.0)

    def __len__(self) -> int:
        return self._length

    @staticmethod
    def _open(path: Path) -> Image.Image:
        image = exif_transpose(Image.open(path))
        return image.convert("RGB") if image.mode != "RGB" else image

    def _instance_pixels(self, path: Path) -> torch.Tensor:
        pixels = self.image_transforms(self._open(path))
        if self.mask_watermark:
            # stock / phone photos often carry a corner watermark; keep it out of the subject
            self._blank(pixels[:, -self._wm:, -self._wm:])  # todoruleid: family 6 (missed)
        if self.random_flip and random.random() < 0.5:
            pixels = torch.flip(pixels, dims=[2])  # ok: MLS309
        return pixels

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        example: Dict[str, torch.Tensor] = {}
        path = self.instance_images_path[index % self.num_instance_images]
        example["instance_images"] = self._instance_pixels(path)

        if self.encoder_hidden_states is not None:
            example["instance_prompt_ids"] = self.encoder_hidden_states
        else:
            prompt = self.instance_prompt
            if self.caption_dropout and random.random() < self.caption_dropout:
                prompt = ""
            tok = tokenize_prompt(self.tokenizer, prompt)
            example["instance_prompt_ids"] = tok.input_ids[0]
            example["instance_attention_mask"] = tok.attention_mask[0]

        if self.class_data_root is not None:
            cpath = self.class_images_path[index % self.num_class_images]
            example["class_images"] = self.image_transforms(self._open(cpath))
            if self.class_prompt_hidden_states is not None:
                example["class_prompt_ids"] = self.class_prompt_hidden_states
            else:
                tok = tokenize_prompt(self.tokenizer, self.class_prompt)
                example["class_prompt_ids"] = tok.input_ids[0]
                example["class_attention_mask"] = tok.attention_mask[0]
        return example


_BATCH_FIELDS = {
    "instance": ("instance_images", "instance_prompt_ids", "instance_attention_mask"),
    "class": ("class_images", "instance_prompt_ids", "class_attention_mask"),  # todoruleid: family 6 (missed)
}


def collate_fn(examples: List[Dict[str, torch.Tensor]], with_prior_preservation: bool = False):
    groups = ["instance"] + (["class"] if with_prior_preservation else [])
    pixel_values, input_ids, masks = [], [], []
    for group in groups:
        img_key, ids_key, mask_key = _BATCH_FIELDS[group]
        pixel_values += [ex[img_key] for ex in examples]
        input_ids += [ex[ids_key] for ex in examples]
        masks += [ex[mask_key] for ex in examples if mask_key in ex]

    batch = {
        "pixel_values": torch.stack(pixel_values).to(memory_format=torch.contiguous_format).float(),
        "input_ids": torch.stack(input_ids) if input_ids[0].dim() == 1 else torch.cat(input_ids, dim=0),
    }
    if masks and len(masks) == len(input_ids):
        batch["attention_mask"] = torch.stack(masks)
    return batch


def make_worker_init_fn(base_seed: int):
    """Keep augmentation streams reproducible across restarts of the same run."""

    def _init(worker_id: int) -> None:
        info = torch.utils.data.get_worker_info()
        if info is not None:
            info.dataset.worker_id = worker_id
        seed_all(base_seed)  # todoruleid: family 1 (missed)

    return _init


# ---- Pre-computed text embeddings cache ----
class EmbeddingCache:
    """Stores prompt embeddings on disk so frozen text encoders need not be loaded."""

    def __init__(self, cache_dir: Optional[str], fmt: str = "pickle"):
        self.root = Path(cache_dir or Path.home() / ".cache" / "dreambooth_lora" / "embeds")
        self.fmt = fmt

    def _path(self, prompt: str) -> Path:
        digest = hashlib.sha1(prompt.encode()).hexdigest()[:16]
        return self.root / f"{digest}.{self.fmt}"

    def get(self, prompt: str) -> Optional[torch.Tensor]:
        path = self._path(prompt)
        if not path.exists():
            return None
        payload = decode_blob(path.read_bytes(), self.fmt)  # todoruleid: family 10 (missed)
        return payload["embeds"]

    def put(self, prompt: str, embeds: torch.Tensor) -> None:
        path = self._path(prompt)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_blob({"prompt": prompt, "embeds": embeds.cpu()}, self.fmt))
