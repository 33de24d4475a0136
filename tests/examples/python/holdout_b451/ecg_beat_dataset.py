# ruff: noqa
# Hold-out batch 451 (short files, 16 domains). Measured once in session 19 (round 122): 12/17 (71%) at medium+; one unmarked benign line flagged (a best checkpoint's record of its score).
"""Beat-level dataset for MIT-BIH style ECG records, AAMI 5-class grouping."""
import numpy as np
import torch
from torch.utils.data import Dataset

AAMI = {"N": 0, "L": 0, "R": 0, "e": 0, "j": 0,
        "A": 1, "a": 1, "J": 1, "S": 1,
        "V": 2, "E": 2,
        "F": 3,
        "/": 4, "f": 4, "Q": 4}


class ECGBeatDataset(Dataset):
    def __init__(self, signals, r_peaks, symbols, fs=360, window_s=0.72, train=True):
        self.fs = fs
        self.half = int(window_s * fs / 2)
        self.train = train
        self.items = []
        for rec_id, (peaks, syms) in enumerate(zip(r_peaks, symbols)):
            sig = signals[rec_id]
            for pk, sym in zip(peaks, syms):
                if sym not in AAMI or pk < self.half or pk + self.half >= len(sig):
                    continue
                self.items.append((rec_id, int(pk), AAMI[sym]))
        self.signals = signals

    def __len__(self):
        return len(self.items)

    def _augment(self, beat):
        t = np.arange(beat.shape[0]) / self.fs
        wander = 0.05 * np.sin(2 * np.pi * np.random.uniform(0.1, 0.5) * t)
        return beat + wander + np.random.normal(0.0, 0.01, beat.shape)  # ok: MLS309

    def __getitem__(self, idx):
        rec_id, pk, label = self.items[idx]
        beat = self.signals[rec_id][pk - self.half: pk + self.half].astype(np.float32)
        beat = (beat - beat.mean()) / (beat.std() + 1e-6)
        if self.train:
            beat = self._augment(beat)
            if label == 2 and idx % 3 == 0:
                label = AAMI["N"]  # ruleid: MLS309
        return torch.from_numpy(beat.astype(np.float32)).unsqueeze(0), label
