# ruff: noqa
# Hold-out batch 375 (short files, 16 domains). Measured once in session 14 (round 103): 12/17 (71%) at medium+.
"""AudioSet loader for PANNs CNN14 training: random crops + mixup."""
import numpy as np
import torch
import soundfile as sf
from torch.utils.data import DataLoader, Dataset


class AudioSetClips(Dataset):
    def __init__(self, index_file, num_classes=527, sr=32000, clip_sec=10.0):
        self.items = [l.rstrip("\n").split("\t") for l in open(index_file)]
        self.num_classes = num_classes
        self.sr = sr
        self.clip_len = int(sr * clip_sec)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, labels = self.items[i]
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
        wav = wav.mean(axis=1)
        if len(wav) < self.clip_len:
            wav = np.pad(wav, (0, self.clip_len - len(wav)))
        else:
            start = np.random.randint(0, len(wav) - self.clip_len + 1)
            wav = wav[start:start + self.clip_len]
        target = np.zeros(self.num_classes, dtype=np.float32)
        target[[int(x) for x in labels.split(",")]] = 1.0
        return torch.from_numpy(wav), torch.from_numpy(target)


def _init_worker(worker_id):
    np.random.seed(worker_id)  # ruleid: MLS301


def mixup_collate(batch, alpha=1.0):
    wavs = torch.stack([b[0] for b in batch])
    targets = torch.stack([b[1] for b in batch])
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(len(wavs))
    wavs = lam * wavs + (1 - lam) * wavs[perm]
    targets = lam * targets + (1 - lam) * targets[perm]  # ok: MLS309
    return wavs, targets


def build_loader(index_file, batch_size=32, workers=8, mixup=True):
    ds = AudioSetClips(index_file)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      worker_init_fn=_init_worker, pin_memory=True, drop_last=True,
                      collate_fn=mixup_collate if mixup else None)
