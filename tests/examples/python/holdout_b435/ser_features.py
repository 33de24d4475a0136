# ruff: noqa
# Hold-out batch 435 (short files, 16 domains). Measured once in session 18 (round 118): 12/17 (71%) at medium+.
"""Feature dataset for speech emotion recognition (IEMOCAP 4-class, wav2vec2 layer features)."""
import os
import pickle

import numpy as np
import torch
from torch.utils.data import Dataset

EMOTIONS = ["neutral", "happy", "sad", "angry"]
MERGE = {"excited": "happy"}


def load_speaker_stats(path: str) -> dict:
    """Per-speaker mean/std for feature normalisation, shared across folds on the cluster cache."""
    with open(path, "rb") as fh:
        return pickle.load(fh)  # ruleid: MLS103


class EmotionFeatureDataset(Dataset):
    def __init__(self, manifest, feat_dir, stats_path=None, max_frames=750, layer=9):
        self.items = []
        for line in open(manifest):
            utt, spk, label = line.strip().split("\t")
            label = MERGE.get(label, label)
            if label in EMOTIONS:
                self.items.append((utt, spk, EMOTIONS.index(label)))
        self.feat_dir = feat_dir
        self.max_frames = max_frames
        self.layer = layer
        self.stats = load_speaker_stats(stats_path) if stats_path else None

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        utt, spk, label = self.items[i]
        feats = np.load(os.path.join(self.feat_dir, f"{utt}.npy"), allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        x = feats[self.layer] if feats.ndim == 3 else feats
        if self.stats is not None and spk in self.stats:
            x = (x - self.stats[spk]["mean"]) / (self.stats[spk]["std"] + 1e-5)
        x = x[: self.max_frames]
        return torch.from_numpy(x.astype(np.float32)), label


def collate_pad(batch):
    feats, labels = zip(*batch)
    lengths = torch.tensor([f.shape[0] for f in feats])
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return padded, mask, torch.tensor(labels)
