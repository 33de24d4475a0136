# ruff: noqa
# Hold-out batch 431 (short files, 16 domains). Measured once in session 18 (round 117): 15/17 (88%) at medium+.
"""Offline knowledge distillation: cached ResNet-152 teacher logits -> MobileNetV3 student."""
import logging
import os
import pickle

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

logger = logging.getLogger("kd")


def load_teacher_cache(cache_path: str):
    """Cache produced by `dump_teacher.py`: {'logits': float16 [N, C], 'index': {img_id: row}}."""
    if cache_path.endswith(".npy"):
        logits = np.load(cache_path, mmap_mode="r")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        index = None
    else:
        with open(cache_path, "rb") as f:
            blob = pickle.load(f)  # ruleid: MLS103
        logits, index = blob["logits"], blob.get("index")
    logger.info("teacher cache %s: %s logits", os.path.basename(cache_path), tuple(logits.shape))
    return logits, index


class DistillDataset(Dataset):
    def __init__(self, base: Dataset, cache_path: str):
        self.base = base
        self.logits, self.index = load_teacher_cache(cache_path)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        img, label = self.base[i]
        row = self.index[self.base.ids[i]] if self.index is not None else i
        return img, label, torch.from_numpy(np.asarray(self.logits[row], dtype=np.float32))


def kd_loss(student_logits, teacher_logits, labels, T=4.0, alpha=0.9):
    soft = F.kl_div(F.log_softmax(student_logits / T, dim=1),
                    F.softmax(teacher_logits / T, dim=1), reduction="batchmean") * (T * T)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


def train_one_epoch(student, loader, optimizer, device, T=4.0, alpha=0.9, scaler=None):
    student.train()
    running = 0.0
    for step, (x, y, t_logits) in enumerate(loader):
        x, y, t_logits = x.to(device, non_blocking=True), y.to(device), t_logits.to(device)
        with torch.autocast("cuda", enabled=scaler is not None):
            loss = kd_loss(student(x), t_logits, y, T, alpha)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        running += loss.item()
    return running / max(1, len(loader))
