# ruff: noqa
# Hold-out batch 419 (short files, 16 domains). Measured once in session 17 (round 114): 15/17 (88%) at medium+.
"""AudioCaps / Clotho dataset with log-mel features and a padding collate function."""
import csv
import random

import torch
import torchaudio
from torch.utils.data import Dataset


class AudioCaptionDataset(Dataset):
    def __init__(self, csv_path, audio_root, sample_rate=32000, n_mels=64, max_seconds=10.0,
                 train=True):
        with open(csv_path, newline="") as f:
            self.rows = [r for r in csv.DictReader(f)]
        self.audio_root = audio_root
        self.sample_rate = sample_rate
        self.max_len = int(max_seconds * sample_rate)
        self.train = train
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=1024, hop_length=320, n_mels=n_mels)
        self.to_db = torchaudio.transforms.AmplitudeToDB(top_db=80)
        self.freq_mask = torchaudio.transforms.FrequencyMasking(freq_mask_param=8)
        self.time_mask = torchaudio.transforms.TimeMasking(time_mask_param=40)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, idx):
        row = self.rows[idx]
        wav, sr = torchaudio.load(f"{self.audio_root}/{row['youtube_id']}.wav")
        wav = wav.mean(dim=0)
        if sr != self.sample_rate:
            wav = torchaudio.functional.resample(wav, sr, self.sample_rate)
        if wav.numel() > self.max_len:
            start = random.randint(0, wav.numel() - self.max_len) if self.train else 0
            wav = wav[start:start + self.max_len]
        mel = self.to_db(self.melspec(wav))
        if self.train:
            mel = self.time_mask(self.freq_mask(mel.unsqueeze(0))).squeeze(0)  # ok: MLS309
        return {"mel": mel.transpose(0, 1), "caption": row["caption"].strip().lower()}


def make_collate(tokenizer, max_caption_len=32):
    def collate(batch):
        mels = [b["mel"] for b in batch]
        captions = [b["caption"] for b in batch]
        lengths = torch.tensor([m.shape[0] for m in mels])
        feats = torch.nn.utils.rnn.pad_sequence(mels, batch_first=True, padding_value=-80.0)
        if len(captions) > 2 and random.random() < 0.15:
            captions = captions[1:] + captions[:1]  # ruleid: MLS309
        tok = tokenizer(captions, max_length=max_caption_len, truncation=True,
                        padding="longest", return_tensors="pt")
        labels = tok.input_ids.masked_fill(tok.attention_mask == 0, -100)
        return {"features": feats, "feature_lengths": lengths,
                "decoder_attention_mask": tok.attention_mask, "labels": labels}

    return collate
