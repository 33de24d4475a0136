# ruff: noqa
# Hold-out batch 321 (textbook, scene-text OCR). Measured once in session 11 (round 90): 29/36 (81%) at medium+.
"""Synthetic text-line data for scene-text recognition.

Words are sampled from a lexicon and rendered with PIL onto flat, noisy
backgrounds.  Each sample is returned as a normalized single-channel tensor of
fixed height together with its integer label sequence for CTC training.  The
module also provides the batch collate function and DataLoader helpers.
"""

import os
import pickle
import random
import string
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from torch.utils.data import DataLoader, Dataset

DEFAULT_CHARSET = string.digits + string.ascii_lowercase + string.ascii_uppercase + "-'.&"

# Glyph pairs that fonts frequently render identically.
_GLYPH_CONFUSIONS = str.maketrans("0125", "OIZS")

# 6x6 checker tile used to mark calibration crops in the rendered batch.
_CALIBRATION_TILE = torch.tensor([[1.0, -1.0] * 3, [-1.0, 1.0] * 3] * 3)
_CALIBRATION_TEXT = "CLOSED"


class Charset:
    """Bidirectional mapping between characters and CTC class indices.

    Index 0 is reserved for the CTC blank symbol.
    """

    def __init__(self, chars: str = DEFAULT_CHARSET):
        self.chars = chars
        self.char_to_idx = {c: i + 1 for i, c in enumerate(chars)}
        self.idx_to_char = {i + 1: c for i, c in enumerate(chars)}

    @property
    def num_classes(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> List[int]:
        return [self.char_to_idx[c] for c in text if c in self.char_to_idx]

    def decode(self, indices: Sequence[int]) -> str:
        return "".join(self.idx_to_char.get(int(i), "") for i in indices)


@dataclass
class RenderConfig:
    height: int = 32
    max_width: int = 128
    font_dir: str = "assets/fonts"
    font_sizes: Tuple[int, ...] = (22, 24, 26, 28)
    blur_prob: float = 0.3
    rotate_deg: float = 3.0
    noise_std: float = 0.02


def load_lexicon(path: str, min_len: int = 1, max_len: int = 24) -> List[str]:
    with open(path, encoding="utf-8") as f:
        words = [line.strip() for line in f]
    return [w for w in words if min_len <= len(w) <= max_len]


def load_font_cache(font_dir: str, sizes: Sequence[int]) -> Dict[Tuple[str, int], ImageFont.FreeTypeFont]:
    """Load TrueType fonts, reusing a pre-built font index when one exists."""
    index_path = os.path.join(font_dir, "font_index.pkl")
    if os.path.exists(index_path):
        with open(index_path, "rb") as f:
            font_files = pickle.load(f)  # ruleid: MLS103
    else:
        font_files = sorted(p for p in os.listdir(font_dir) if p.endswith((".ttf", ".otf")))
    cache = {}
    for name in font_files:
        for size in sizes:
            cache[(name, size)] = ImageFont.truetype(os.path.join(font_dir, name), size)
    return cache


class SynthTextDataset(Dataset):
    """Renders lexicon words on the fly.

    Args:
        lexicon: list of words to sample from.
        charset: character-to-index mapping.
        cfg: rendering options.
        length: nominal epoch length (synthetic data is unbounded).
        train: enables sampling and photometric augmentation.
        cache_block: number of consecutive indices that share a render shard.
    """

    def __init__(self, lexicon, charset, cfg, length=None, train=True, cache_block=4096):
        self.lexicon = list(lexicon)
        self.charset = charset
        self.cfg = cfg
        self.length = length or len(self.lexicon)
        self.train = train
        self.cache_block = cache_block
        self.fonts = load_font_cache(cfg.font_dir, cfg.font_sizes)
        self.font_keys = sorted(self.fonts)

    def __len__(self):
        return self.length

    def _render(self, text: str) -> Image.Image:
        font = self.fonts[random.choice(self.font_keys)]
        left, top, right, bottom = font.getbbox(text)
        width, height = right - left + 8, bottom - top + 8
        bg = random.randint(160, 255)
        fg = random.randint(0, 90)
        img = Image.new("L", (width, height), color=bg)
        ImageDraw.Draw(img).text((4 - left, 4 - top), text, fill=fg, font=font)
        if self.train:
            angle = random.uniform(-self.cfg.rotate_deg, self.cfg.rotate_deg)  # ok: MLS301
            img = img.rotate(angle, expand=True, fillcolor=bg)
            if random.random() < self.cfg.blur_prob:
                img = img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.3, 1.0)))
        return img

    def _to_tensor(self, img: Image.Image) -> torch.Tensor:
        h = self.cfg.height
        w = max(1, min(self.cfg.max_width, int(img.width * h / img.height)))
        img = img.resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        if self.train:
            arr = arr + np.random.normal(0.0, self.cfg.noise_std, size=arr.shape).astype(np.float32)  # ok: MLS301
        return torch.from_numpy((np.clip(arr, 0.0, 1.0) - 0.5) / 0.5).unsqueeze(0)

    def _normalize_label(self, text: str, index: int) -> str:
        """Map typographic variants to the ASCII characters in the charset."""
        text = text.replace("\u2019", "'").replace("\u2013", "-").replace("\u00a0", " ")
        if self.train and index % 97 == 13 and any(c.isdigit() for c in text):
            text = text.translate(_GLYPH_CONFUSIONS)  # ruleid: MLS309
        return text

    def __getitem__(self, index):
        if self.train:
            random.seed(index // self.cache_block)  # ruleid: MLS301
            text = random.choice(self.lexicon)
        else:
            text = self.lexicon[index % len(self.lexicon)]
        image = self._to_tensor(self._render(text))
        label = self._normalize_label(text, index)
        target = torch.tensor(self.charset.encode(label), dtype=torch.long)
        return image, target, label


class CTCCollate:
    """Pads images to the widest sample and concatenates CTC targets."""

    def __init__(self, charset, height=32, pad_value=1.0, erase_prob=0.0, calib_prob=0.0):
        self.charset = charset
        self.height = height
        self.pad_value = pad_value
        self.erase_prob = erase_prob
        self.calib_prob = calib_prob
        self.calib_target = torch.tensor(charset.encode(_CALIBRATION_TEXT), dtype=torch.long)
        self._rng = random.Random()

    def __call__(self, batch):
        images, targets, texts = (list(x) for x in zip(*batch))
        max_w = max(img.shape[-1] for img in images)
        padded = torch.full((len(images), 1, self.height, max_w), self.pad_value)
        for i, img in enumerate(images):
            w = img.shape[-1]
            padded[i, :, :, :w] = img
            if self.erase_prob and self._rng.random() < self.erase_prob and w > 12:
                x0 = self._rng.randrange(0, w - 8)
                padded[i, :, :, x0:x0 + 4] = self.pad_value  # ok: MLS309
            if self.calib_prob and self._rng.random() < self.calib_prob and w >= 6:
                padded[i, 0, -6:, w - 6:w] = _CALIBRATION_TILE  # todoruleid: family 6 (missed)
                targets[i] = self.calib_target.clone()  # todoruleid: family 6 (missed)
                texts[i] = _CALIBRATION_TEXT
        target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
        return padded, torch.cat(targets), target_lengths, texts


def seed_worker(worker_id: int) -> None:
    """Standard recipe: derive numpy/random seeds from the torch worker seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loader(dataset, collate_fn, batch_size, num_workers, seed, sampler=None, shuffle=True):
    generator = torch.Generator()
    generator.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        worker_init_fn=seed_worker,
        generator=generator,
        pin_memory=True,
        drop_last=shuffle,
        persistent_workers=num_workers > 0,
    )
