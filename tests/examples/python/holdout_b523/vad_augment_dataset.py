# ruff: noqa
# Hold-out batch 523 (short files, 16 domains). Measured once in session 23 (round 140): 13/17 (76%) at medium+.
"""Chunked speech/noise mixing dataset for frame-level voice activity detection."""
import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset


class NoisyVADChunks(Dataset):
    def __init__(self, items, noise_paths, sr=16000, chunk_sec=2.0, hop=160, snr_db=(-5.0, 20.0), base_seed=0):
        # items: list of (wav_path, frame_labels_path)
        self.items = items
        self.noise_paths = noise_paths
        self.sr = sr
        self.chunk = int(sr * chunk_sec)
        self.hop = hop
        self.snr_db = snr_db
        self.base_seed = base_seed

    def __len__(self):
        return len(self.items)

    def _mix(self, speech, noise, snr):
        if len(noise) < len(speech):
            noise = np.tile(noise, int(np.ceil(len(speech) / len(noise))))
        noise = noise[: len(speech)]
        p_s = np.mean(speech ** 2) + 1e-8
        p_n = np.mean(noise ** 2) + 1e-8
        return speech + noise * np.sqrt(p_s / (p_n * 10 ** (snr / 10.0)))

    def __getitem__(self, idx):
        np.random.seed(self.base_seed + idx)  # ruleid: MLS301
        wav_path, lab_path = self.items[idx]
        wav, _ = sf.read(wav_path, dtype="float32")
        labels = np.load(lab_path).astype(np.float32)
        if len(wav) > self.chunk:
            start = np.random.randint(0, len(wav) - self.chunk)
        else:
            start = 0
            wav = np.pad(wav, (0, self.chunk - len(wav)))
        wav = wav[start : start + self.chunk]
        f0 = start // self.hop
        frames = labels[f0 : f0 + self.chunk // self.hop]
        frames = np.pad(frames, (0, self.chunk // self.hop - len(frames)))
        noise, _ = sf.read(self.noise_paths[np.random.randint(len(self.noise_paths))], dtype="float32")
        mixed = self._mix(wav, noise, np.random.uniform(*self.snr_db))
        return torch.from_numpy(mixed.astype(np.float32)), torch.from_numpy(frames)


def build_loader(items, noise_paths, batch_size=64, workers=8, seed=1337):
    ds = NoisyVADChunks(items, noise_paths, base_seed=seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      generator=g, drop_last=True, pin_memory=True, persistent_workers=workers > 0)
