# ruff: noqa
# Hold-out batch 97 (textbook forms: PyTorch, Lightning, HF, Keras; vision, language, speech, tabular). Measured once in session 4 (round 34): 16/18 (89%) at medium+.
"""Batching and SpecAugment-style masking for the speech-commands classifier."""
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

LABELS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
LABEL_TO_IDX = {name: i for i, name in enumerate(LABELS)}


def spec_augment(spec, n_freq=2, max_f=8, n_time=2, max_t=20):
    spec = spec.clone()
    n_mels, n_frames = spec.shape[-2], spec.shape[-1]
    for _ in range(n_freq):
        f = int(torch.randint(0, max_f + 1, (1,)))
        f0 = int(torch.randint(0, max(1, n_mels - f), (1,)))
        spec[..., f0:f0 + f, :] = 0.0  # ok: MLS309
    for _ in range(n_time):
        t = int(torch.randint(0, max_t + 1, (1,)))
        t0 = int(torch.randint(0, max(1, n_frames - t), (1,)))
        spec[..., t0:t0 + t] = 0.0
    return spec


def collate_batch(batch, train=True):
    """batch: list of (waveform [1, T], sample_rate, label_str, speaker_id, utt_no)."""
    wavs, labels = [], []
    for wav, _sr, label, _spk, _utt in batch:
        wav = wav.squeeze(0)
        if train:
            wav = wav * float(torch.empty(1).uniform_(0.8, 1.2))  # ok: MLS309
        wavs.append(wav)
        labels.append(LABEL_TO_IDX[label])
    lengths = torch.tensor([w.shape[0] for w in wavs])
    wavs = pad_sequence(wavs, batch_first=True)
    if wavs.shape[1] < 16000:
        wavs = F.pad(wavs, (0, 16000 - wavs.shape[1]))
    labels = torch.tensor(labels, dtype=torch.long)
    if train:
        swap = (labels == LABEL_TO_IDX["stop"]) & (torch.rand(labels.shape) < 0.25)
        labels[swap] = LABEL_TO_IDX["go"]  # ruleid: MLS309
    return wavs, lengths, labels


def make_collate(train):
    return lambda batch: collate_batch(batch, train=train)
