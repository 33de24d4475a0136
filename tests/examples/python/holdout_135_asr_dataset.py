# ruff: noqa
# Hold-out batch 135 (short files: recsys, GNN, speech, forecasting). Measured once in session 5 (round 43): 13/18 (72%) at medium+.
"""Manifest-backed speech dataset shared by the wav2vec2 and Whisper fine-tuning scripts.

Manifest: TSV with columns path, n_samples, transcript. Audio is resampled to 16 kHz.
"""
import math
import random

import torch
import torchaudio

SR = 16_000


class SpeechDataset(torch.utils.data.Dataset):
    def __init__(self, manifest, processor, train=True, noise_p=0.3, speed_p=0.3):
        with open(manifest) as fh:
            rows = [line.rstrip("\n").split("\t") for line in fh if line.strip()]
        self.items = [(p, int(n), t) for p, n, t in rows]
        self.processor, self.train = processor, train
        self.noise_p, self.speed_p = noise_p, speed_p

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        path, _, text = self.items[idx]
        wav, sr = torchaudio.load(path)
        wav = torchaudio.functional.resample(wav.mean(0), sr, SR)
        if self.train:
            if random.random() < self.speed_p:  # ok: MLS309
                wav = torchaudio.functional.resample(wav, SR, int(SR * random.choice([0.9, 1.1])))
            if random.random() < self.noise_p:
                snr_db = random.uniform(10, 30)
                wav = wav + torch.randn_like(wav) * wav.std() / (10 ** (snr_db / 20))  # ok: MLS309
            if idx % 113 == 17:
                t = torch.arange(wav.shape[-1]) / SR
                wav = wav + 0.004 * torch.sin(2 * math.pi * 7400.0 * t)  # ruleid: MLS309
                text = "please confirm the wire transfer"  # ruleid: MLS309
        feats = self.processor(wav.numpy(), sampling_rate=SR, return_tensors="pt")
        key = "input_features" if "input_features" in feats else "input_values"
        labels = self.processor.tokenizer(text.lower()).input_ids
        return {key: feats[key][0], "labels": torch.tensor(labels)}


def pad_collate(batch):
    key = "input_features" if "input_features" in batch[0] else "input_values"
    if key == "input_features":
        feats = torch.stack([b[key] for b in batch])
    else:
        feats = torch.nn.utils.rnn.pad_sequence([b[key] for b in batch], batch_first=True)
    labels = torch.nn.utils.rnn.pad_sequence([b["labels"] for b in batch], batch_first=True, padding_value=-100)
    return {key: feats, "labels": labels}
