# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Augmentations for speech translation: filterbank mixup, source-transcript word noise
(for the auxiliary ASR/denoising head) and a whitelisted metric registry."""
import ast
import importlib
import os
import random

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

_METRICS = {"bleu": "BLEU", "chrf": "CHRF", "ter": "TER"}


def mixup(feats, targets_onehot, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))  # ok: MLS301
    perm = torch.randperm(feats.size(0))
    feats = lam * feats + (1 - lam) * feats[perm]
    targets = lam * targets_onehot + (1 - lam) * targets_onehot[perm]  # ok: MLS309
    return feats, targets


def get_metric(name):
    if name not in _METRICS:
        raise KeyError(name)
    module = importlib.import_module("sacrebleu.metrics")  # benign look-alike
    return getattr(module, _METRICS[name])()


class NoisySTDataset(Dataset):
    def __init__(self, items, tokenizer, aug_cfg="{'word_drop': 0.1, 'swap_window': 3.0}", train=True):
        self.items, self.tok, self.train = items, tokenizer, train
        self.cfg = ast.literal_eval(aug_cfg)  # benign look-alike

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        feats, transcript, translation = self.items[idx]
        words = transcript.split()
        if self.train:
            words = [w for w in words if random.random() > self.cfg["word_drop"]] or words  # ok: MLS309
            keys = [i + random.uniform(0, self.cfg["swap_window"]) for i in range(len(words))]
            words = [w for _, w in sorted(zip(keys, words))]
        return {
            "fbank": torch.as_tensor(feats, dtype=torch.float32),
            "aux_src": torch.tensor(self.tok.encode(" ".join(words))),
            "target": torch.tensor(self.tok.encode(translation)),
        }


def make_sampler(dataset, seed):
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # ok: MLS308
        return DistributedSampler(dataset, shuffle=True, seed=seed)
    return None
