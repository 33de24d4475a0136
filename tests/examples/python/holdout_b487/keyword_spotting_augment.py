# ruff: noqa
# Hold-out batch 487 (16 short files, 16 domains). Measured once in session 21 (round 131): 13/17 (76%) at medium+.
"""Background-noise mixing and time-shift augmentation for Speech Commands keyword spotting."""
import glob
import os

import numpy as np
import torch
import torchaudio

SAMPLE_RATE = 16000


class NoiseMixer:
    def __init__(self, noise_dir, snr_db=(0.0, 20.0), p=0.8, max_shift_ms=100):
        self.noises = []
        for path in sorted(glob.glob(os.path.join(noise_dir, "*.wav"))):
            wav, sr = torchaudio.load(path)
            if sr != SAMPLE_RATE:
                wav = torchaudio.functional.resample(wav, sr, SAMPLE_RATE)
            self.noises.append(wav[0].numpy())
        self.snr_db = snr_db
        self.p = p
        self.max_shift = int(SAMPLE_RATE * max_shift_ms / 1000)

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        np.random.seed(os.getpid() % (2 ** 32))  # ruleid: MLS301
        shift = np.random.randint(-self.max_shift, self.max_shift + 1)
        wav = np.roll(wav, shift)
        if shift > 0:
            wav[:shift] = 0
        elif shift < 0:
            wav[shift:] = 0
        if self.noises and np.random.rand() < self.p:
            noise = self.noises[np.random.randint(len(self.noises))]
            start = np.random.randint(0, len(noise) - len(wav))
            seg = noise[start:start + len(wav)]
            snr = np.random.uniform(*self.snr_db)
            sig_pow = np.mean(wav ** 2) + 1e-10
            noise_pow = np.mean(seg ** 2) + 1e-10
            wav = wav + seg * np.sqrt(sig_pow / (noise_pow * 10 ** (snr / 10)))
        return wav.astype(np.float32)


def worker_init_fn(worker_id):
    seed = torch.initial_seed() % (2 ** 32)
    np.random.seed(seed + worker_id)  # ok: MLS301


def log_mel(wav, n_mels=40):
    mel = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=480, hop_length=160, n_mels=n_mels)
    return torch.log(mel(torch.as_tensor(wav)) + 1e-6)
