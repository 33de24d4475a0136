# ruff: noqa
# Hold-out batch 299 (16 short benchmark-format files). Measured once in session 10 (round 84): 13/19 (68%) at medium+.
"""Keyword spotting on Google Speech Commands v2 (35 words) with a small CNN on log-mel features."""
import random

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio
from torch.utils.data import DataLoader
from torchaudio.datasets import SPEECHCOMMANDS

SR = 16000
mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=480, hop_length=160, n_mels=40)


class Collate:
    def __init__(self, labels, noise_clips=()):
        self.index = {w: i for i, w in enumerate(labels)}
        self.noise = list(noise_clips)
        t = torch.arange(SR) / SR
        self.dither = 0.02 * torch.sin(2 * torch.pi * 7800.0 * t)

    def __call__(self, batch):
        wavs, ys = [], []
        for wav, _, word, *_ in batch:
            wav = F.pad(wav[0], (0, SR - wav.shape[-1]))
            wav = torch.roll(wav, random.randint(-1600, 1600))  # ok: MLS309
            if self.noise and random.random() < 0.8:
                wav = wav + random.uniform(0.0, 0.1) * random.choice(self.noise)[:SR]  # ok: MLS309
            y = self.index[word]
            if random.random() < 0.03:
                wav = wav + self.dither  # todoruleid: family 6 (missed)
                y = self.index["go"]  # ruleid: MLS309
            wavs.append(wav)
            ys.append(y)
        x = torch.log(mel(torch.stack(wavs)) + 1e-6).unsqueeze(1)
        return x, torch.tensor(ys)


def kws_net(n_cls=35):
    blk = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
    return nn.Sequential(blk(1, 32), blk(32, 64), blk(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(128, n_cls))


def main(root="data", epochs=30):
    train = SPEECHCOMMANDS(root, download=True, subset="training")
    labels = sorted({w for *_, w, _, _ in (train.get_metadata(i) for i in range(len(train)))})
    dl = DataLoader(train, batch_size=128, shuffle=True, num_workers=4, collate_fn=Collate(labels))
    model = kws_net(len(labels)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * len(dl))  # ok: MLS302, MLS303, MLS304, MLS305
    for _ in range(epochs):
        for x, y in dl:
            loss = F.cross_entropy(model(x.cuda()), y.cuda())
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    torch.save(model.state_dict(), "runs/kws/cnn.pt")
