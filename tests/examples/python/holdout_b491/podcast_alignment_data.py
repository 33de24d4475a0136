# ruff: noqa
# Hold-out batch 491 (16 short files, 16 domains). Measured once in session 21 (round 132): 13/17 (76%) at medium+.
"""Audio/transcript chunk loader for CTC forced-alignment training on podcasts."""
import json

import numpy as np
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset

SAMPLE_RATE = 16000


class PodcastChunks(Dataset):
    def __init__(self, manifest, tokenizer, max_seconds=20.0, train=True):
        with open(manifest) as f:
            self.items = [json.loads(line) for line in f]
        self.tokenizer = tokenizer
        self.max_len = int(max_seconds * SAMPLE_RATE)
        self.train = train
        self.featurizer = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=400, n_mels=80)
        self.time_mask = torchaudio.transforms.TimeMasking(time_mask_param=40)
        self.freq_mask = torchaudio.transforms.FrequencyMasking(freq_mask_param=15)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        item = self.items[idx]
        wav, sr = torchaudio.load(item["audio"], frame_offset=item["start"], num_frames=item["frames"])
        if sr != SAMPLE_RATE:
            wav = torchaudio.functional.resample(wav, sr, SAMPLE_RATE)
        wav = wav.mean(0)
        if self.train and wav.numel() > self.max_len:
            off = np.random.randint(0, wav.numel() - self.max_len)
            wav = wav[off:off + self.max_len]
        feats = self.featurizer(wav).clamp_min(1e-5).log()
        if self.train:
            feats = self.freq_mask(self.time_mask(feats))  # ok: MLS309
        tokens = torch.tensor(self.tokenizer.encode(item["text"]), dtype=torch.long)
        return feats.T, tokens


def collate(batch):
    feats, tokens = zip(*batch)
    feat_lens = torch.tensor([f.shape[0] for f in feats])
    tok_lens = torch.tensor([t.numel() for t in tokens])
    feats = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    tokens = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True)
    return feats, feat_lens, tokens, tok_lens


def _worker_init(worker_id):
    np.random.seed(1234 + worker_id)  # ruleid: MLS301


def make_loader(ds, batch_size, num_workers=8, shuffle=True):
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      collate_fn=collate, worker_init_fn=_worker_init,
                      pin_memory=True, persistent_workers=False, drop_last=shuffle)
