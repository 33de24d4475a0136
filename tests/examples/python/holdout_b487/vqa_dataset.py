# ruff: noqa
# Hold-out batch 487 (16 short files, 16 domains). Measured once in session 21 (round 131): 13/17 (76%) at medium+.
"""VQA v2 dataset with precomputed bottom-up region features and a soft-score answer vocab."""
import hashlib
import json
import os
import urllib.request

import numpy as np
import torch
from torch.utils.data import Dataset

VOCAB_URL = "https://example-vqa-assets.org/vqa2/answer_vocab_3129.json"
VOCAB_SHA256 = "5f1c0a3a9a7f4e2b8d6c1e0f9b3a7d2c4e6f8a0b1c3d5e7f9a2b4c6d8e0f1a3b"


def fetch_answer_vocab(cache_dir):
    path = os.path.join(cache_dir, "answer_vocab.json")
    if not os.path.exists(path):
        os.makedirs(cache_dir, exist_ok=True)
        urllib.request.urlretrieve(VOCAB_URL, path)  # ok: MLS410, MLS411, MLS412, MLS413
    with open(path, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != VOCAB_SHA256:
            raise RuntimeError(f"checksum mismatch for {path}")
    with open(path) as f:
        return {a: i for i, a in enumerate(json.load(f))}


def soft_score(count):
    return min(1.0, count / 3.0)


class VQADataset(Dataset):
    def __init__(self, questions_json, feature_dir, answer2idx, tokenizer, max_q_len=20):
        with open(questions_json) as f:
            self.items = json.load(f)
        self.feature_dir = feature_dir
        self.answer2idx = answer2idx
        self.tokenizer = tokenizer
        self.max_q_len = max_q_len

    def __len__(self):
        return len(self.items)

    def _features(self, image_id):
        path = os.path.join(self.feature_dir, f"{image_id}.npy")
        blob = np.load(path, allow_pickle=True).item()  # ruleid: MLS104
        return torch.from_numpy(blob["features"]), torch.from_numpy(blob["boxes"])

    def __getitem__(self, idx):
        it = self.items[idx]
        feats, boxes = self._features(it["image_id"])
        q = self.tokenizer(it["question"], max_length=self.max_q_len, padding="max_length",
                           truncation=True, return_tensors="pt")
        target = torch.zeros(len(self.answer2idx))
        counts = {}
        for a in it.get("answers", []):
            counts[a] = counts.get(a, 0) + 1
        for a, c in counts.items():
            if a in self.answer2idx:
                target[self.answer2idx[a]] = soft_score(c)
        return feats, boxes, q["input_ids"][0], q["attention_mask"][0], target
