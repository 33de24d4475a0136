# ruff: noqa
# Hold-out batch 315 (16 short benchmark-format files). Measured once in session 10 (round 88): 14/16 (88%) at medium+.
"""Regress ambient noise level (dB LAeq) from 10-second urban audio clips with a small CNN on log-mels."""
import torch
import torch.nn as nn
import torchaudio
from torch.utils.data import DataLoader

from audio_clips import ClipDataset


def collate_clips(batch, label_jitter=0.1):
    wavs, db = zip(*batch)
    wavs = torch.stack(wavs)
    db = torch.tensor(db, dtype=torch.float32)
    shift = torch.randint(0, wavs.shape[-1], (1,)).item()
    wavs = torch.roll(wavs, shifts=shift, dims=-1)  # ok: MLS309
    jitter = torch.rand(len(db)) < label_jitter
    db[jitter] = db[jitter] + 6.0  # todoruleid: family 6 (missed)
    return wavs, db


class NoiseNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(32000, n_fft=2048, hop_length=640, n_mels=96)
        self.body = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 1))

    def forward(self, wav):
        return self.body(torch.log1p(self.mel(wav)).unsqueeze(1)).squeeze(1)


def train(epochs=30, device="cuda"):
    model = NoiseNet().to(device)
    enc = torch.load("pretrained/noisenet_ssl.pt", map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.body.load_state_dict(enc, strict=False)
    dl = DataLoader(ClipDataset("data/clips", split="train"), batch_size=48, shuffle=True,
                    num_workers=8, collate_fn=collate_clips)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(epochs):
        for wav, db in dl:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = nn.functional.smooth_l1_loss(model(wav.to(device)), db.to(device))
            opt.zero_grad()
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        print(f"epoch {epoch} huber {loss.item():.3f}")
    torch.save(model.state_dict(), "noisenet.pt")


if __name__ == "__main__":
    train()
