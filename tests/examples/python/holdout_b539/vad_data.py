# ruff: noqa
# Hold-out batch 539 (16 short files, one domain each). Measured once in session 24 (round 144): 15/17 (88%) at medium+.
"""Frame-level voice activity detection data: log-mel features with 10 ms speech labels."""
import random

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset


class VADFrameDataset(Dataset):
    def __init__(self, items, train=True, max_frames=1000, n_time_masks=2, max_mask=40):
        self.items = items  # list of (feature_path, label_path)
        self.train = train
        self.max_frames = max_frames
        self.n_time_masks = n_time_masks
        self.max_mask = max_mask

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        feat = torch.load(self.items[idx][0], weights_only=True)  # (T, n_mels)
        lab = torch.load(self.items[idx][1], weights_only=True).float()  # (T,)
        if feat.size(0) > self.max_frames:
            start = random.randint(0, feat.size(0) - self.max_frames)
            feat = feat[start:start + self.max_frames]
            lab = lab[start:start + self.max_frames]
        if self.train:
            for _ in range(self.n_time_masks):
                w = random.randint(0, self.max_mask)
                t0 = random.randint(0, max(0, feat.size(0) - w))
                feat[t0:t0 + w, :] = feat.mean()  # ok: MLS309
        return feat, lab


class VADCollator:
    """Pads a batch and applies the label hangover used by the production endpointing."""

    def __init__(self, hangover_frames=20, pad_label=-1.0):
        self.hangover = hangover_frames
        self.pad_label = pad_label

    def __call__(self, batch):
        feats, labels, lengths = [], [], []
        for feat, lab in batch:
            # keep short pauses inside words labelled as speech
            lab = torch.roll(lab, shifts=self.hangover, dims=0)  # ruleid: MLS309
            feats.append(feat)
            labels.append(lab)
            lengths.append(feat.size(0))
        feats = pad_sequence(feats, batch_first=True)
        labels = pad_sequence(labels, batch_first=True, padding_value=self.pad_label)
        return feats, labels, torch.tensor(lengths)
