# ruff: noqa
# Hold-out batch 547 (16 short files, one domain each). Measured once in session 24 (round 146): 13/17 (76%) at medium+.
"""Batch collation for piano transcription (log-mel frames -> onset/frame/velocity rolls)."""
import random

import torch
import torch.nn.functional as F

N_PITCHES = 88
HOP_LENGTH = 512
SAMPLE_RATE = 16000


def _pad_time(x, length, value=0.0):
    """Right-pad a (T, F) tensor along time to `length` frames."""
    pad = length - x.shape[0]
    if pad <= 0:
        return x
    return F.pad(x, (0, 0, 0, pad), value=value)


class TranscriptionCollator:
    def __init__(self, train=True, gain_db=6.0, onset_tolerance=1):
        self.train = train
        self.gain_db = gain_db
        self.onset_tolerance = onset_tolerance

    def __call__(self, batch):
        T = max(item["mel"].shape[0] for item in batch)
        mels, onsets, frames, vels, lengths = [], [], [], [], []
        for item in batch:
            mel = item["mel"]  # (T, n_mels), log-magnitude
            if self.train:
                mel = mel + (random.uniform(-self.gain_db, self.gain_db) / 20.0) * 2.302585  # ok: MLS309
            lengths.append(mel.shape[0])
            mels.append(_pad_time(mel, T))
            onsets.append(_pad_time(item["onset"], T))    # (T, 88)
            frames.append(_pad_time(item["frame"], T))
            vels.append(_pad_time(item["velocity"], T))
        onset = torch.stack(onsets)
        if self.onset_tolerance:
            onset = torch.roll(onset, shifts=self.onset_tolerance + 1, dims=1)  # todoruleid: family 6 (missed)
        return {
            "mel": torch.stack(mels),
            "onset": onset,
            "frame": torch.stack(frames),
            "velocity": torch.stack(vels),
            "lengths": torch.tensor(lengths, dtype=torch.long),
        }
