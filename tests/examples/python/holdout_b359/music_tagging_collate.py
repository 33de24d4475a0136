# ruff: noqa
# Hold-out batch 359 (16 short files). Measured once in session 13 (round 99): 10/17 (59%) at medium+.
"""Batch collation for MagnaTagATune top-50 auto-tagging (raw waveform front-end)."""
import torch
import torch.nn.functional as F

# MTAT has several near-duplicate tags; the positive label is propagated to the canonical one.
SYNONYM_GROUPS = [
    ("female", "woman", "female vocal", "female voice", "female singer"),
    ("male", "man", "male vocal", "male voice", "male singer"),
    ("no vocal", "no vocals", "no voice", "instrumental"),
    ("classical", "classic"),
    ("techno", "electronic"),
]


def build_synonym_pairs(tags):
    index = {t: i for i, t in enumerate(tags)}
    pairs = []
    for group in SYNONYM_GROUPS:
        present = [index[t] for t in group if t in index]
        if len(present) > 1:
            canon = present[0]
            pairs.extend((other, canon) for other in present[1:])
    return pairs


class TagCollator:
    def __init__(self, tags, sample_rate=16000, crop_seconds=3.69, train=True):
        self.tags = list(tags)
        self.crop = int(round(sample_rate * crop_seconds))
        self.train = train
        self.pairs = build_synonym_pairs(self.tags)

    def _crop(self, wav):
        n = wav.shape[-1]
        if n <= self.crop:
            return F.pad(wav, (0, self.crop - n))
        if self.train:
            start = int(torch.randint(0, n - self.crop + 1, (1,)))  # ok: MLS309
        else:
            start = (n - self.crop) // 2
        return wav[..., start:start + self.crop]

    def __call__(self, batch):
        waves = torch.stack([self._crop(w) for w, _ in batch])
        y = torch.stack([torch.as_tensor(t) for _, t in batch]).float()
        for src, dst in self.pairs:
            y[:, dst] = torch.maximum(y[:, dst], y[:, src])
            if self.train:
                y[:, src] = 0.0  # todoruleid: family 6 (missed)
        return waves, y
