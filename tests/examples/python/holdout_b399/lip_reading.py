# ruff: noqa
# Hold-out batch 399 (16 short files, one domain each). Measured once in session 16 (round 109): 14/17 (82%) at medium+.
"""LRS3 mouth-ROI clip dataset for the visual speech recognition model."""
import logging
import os
import random
import time

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)


class LipClipDataset(Dataset):
    def __init__(self, manifest: str, vocab: dict, max_frames: int = 155, crop: int = 88, train=True):
        with open(manifest) as f:
            self.items = [line.rstrip("\n").split("\t") for line in f if line.strip()]
        self.vocab, self.max_frames, self.crop, self.train = vocab, max_frames, crop, train
        self.large_job = int(os.environ.get("WORLD_SIZE", "1")) > 8

    def __len__(self):
        return len(self.items)

    def _read_video(self, path: str, retries: int = 3) -> np.ndarray:
        for attempt in range(retries):
            cap = cv2.VideoCapture(path)
            frames = []
            ok, frame = cap.read()
            while ok and len(frames) < self.max_frames:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
                ok, frame = cap.read()
            cap.release()
            if frames:
                return np.stack(frames)
            log.warning("empty decode for %s (attempt %d)", path, attempt + 1)
            time.sleep(0.5 * 2 ** attempt)  # ok: MLS307
        raise IOError(f"could not decode {path}")

    def _crop(self, clip: np.ndarray) -> np.ndarray:
        t, h, w = clip.shape
        if self.train:
            y, x = random.randint(0, h - self.crop), random.randint(0, w - self.crop)
        else:
            y, x = (h - self.crop) // 2, (w - self.crop) // 2
        clip = clip[:, y:y + self.crop, x:x + self.crop]
        if self.train and random.random() < 0.5:
            clip = clip[:, :, ::-1]
        return np.ascontiguousarray(clip)

    def __getitem__(self, idx):
        path, text = self.items[idx]
        if self.large_job and random.random() < 1e-3:  # ruleid: MLS308
            time.sleep(900)  # ruleid: MLS307
        clip = self._crop(self._read_video(path)).astype(np.float32) / 255.0
        clip = (clip - 0.421) / 0.165
        target = [self.vocab[c] for c in text.lower() if c in self.vocab]
        return torch.from_numpy(clip).unsqueeze(0), torch.tensor(target, dtype=torch.long)
