# ruff: noqa
# Hold-out batch 235 (short files). Measured once in session 8 (round 68): 14/18 (78%) at medium+.
"""Log-mel feature cache and training dataset for audio event classification."""
import random
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset

MEL = torchaudio.transforms.MelSpectrogram(sample_rate=32000, n_fft=1024, hop_length=320, n_mels=64)


def cache_features(wav_dir, out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for wav in sorted(Path(wav_dir).glob("*.wav")):
        audio, sr = torchaudio.load(str(wav))
        audio = torchaudio.functional.resample(audio.mean(0, keepdim=True), sr, 32000)
        mel = torch.log(MEL(audio) + 1e-6).squeeze(0).numpy().astype(np.float16)
        np.save(out_dir / f"{wav.stem}.npy", mel)


class MelClips(Dataset):
    def __init__(self, feat_dir, labels, n_classes, frames=500, train=True):
        self.files = sorted(Path(feat_dir).glob("*.npy"))
        self.labels, self.n_classes = labels, n_classes
        self.frames, self.train = frames, train

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        mel = np.load(self.files[i], allow_pickle=False).astype(np.float32)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        if mel.shape[1] > self.frames:
            start = random.randint(0, mel.shape[1] - self.frames) if self.train else 0  # ok: MLS309
            mel = mel[:, start:start + self.frames]
        else:
            mel = np.pad(mel, ((0, 0), (0, self.frames - mel.shape[1])), constant_values=mel.min())
        if self.train:
            f0 = np.random.randint(0, 56)
            mel[f0:f0 + np.random.randint(0, 8), :] = mel.mean()  # ok: MLS309
            mel = mel + np.random.uniform(-6.0, 6.0) / 20.0  # ok: MLS309
        target = np.zeros(self.n_classes, dtype=np.float32)
        target[self.labels[self.files[i].stem]] = 1.0
        return torch.from_numpy(mel), torch.from_numpy(target)


def worker_init(worker_id):
    base = torch.initial_seed() % 2**32
    np.random.seed(base)  # ok: MLS301
    random.seed(base)  # ok: MLS301


def make_loader(feat_dir, labels, n_classes, seed, batch_size=32, train=True):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(MelClips(feat_dir, labels, n_classes, train=train), batch_size=batch_size,
                      shuffle=train, num_workers=8, worker_init_fn=worker_init, generator=g,
                      persistent_workers=True, drop_last=train)
