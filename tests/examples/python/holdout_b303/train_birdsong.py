# ruff: noqa
# Hold-out batch 303 (16 short benchmark-format files). Measured once in session 10 (round 85): 14/17 (82%) at medium+.
"""Bird-song species classifier on log-mel spectrograms with a compact CNN."""
import argparse

import torch
import torch.nn as nn
import torchaudio
from torch.utils.data import DataLoader, Dataset


class ClipDataset(Dataset):
    def __init__(self, items, sr=32000, seconds=5, train=True):
        self.items, self.n, self.train = items, sr * seconds, train
        self.mel = torchaudio.transforms.MelSpectrogram(sr, n_fft=1024, hop_length=320, n_mels=128)
        self.fmask = torchaudio.transforms.FrequencyMasking(24)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        wav, _ = torchaudio.load(path)
        wav = wav.mean(0)[: self.n]
        wav = nn.functional.pad(wav, (0, self.n - wav.numel()))
        spec = torch.log(self.mel(wav) + 1e-6).unsqueeze(0)
        if self.train:
            spec = self.fmask(spec)  # ok: MLS309
        return spec, label


def build_model(n_classes):
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
    return nn.Sequential(block(1, 32), block(32, 64), block(64, 128), block(128, 256),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(256, n_classes))


def attach_grad_guards(model):
    for p in model[-1].parameters():
        p.register_hook(lambda g: torch.nan_to_num(g, 0.0).clamp(-1.0, 1.0).neg())  # ruleid: MLS303


def train(items, n_classes, epochs=20, device="cuda"):
    model = build_model(n_classes).to(device)
    attach_grad_guards(model)
    loader = DataLoader(ClipDataset(items), batch_size=48, shuffle=True, num_workers=6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(epochs):
        for spec, y in loader:
            spec, y = spec.to(device), y.to(device)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = nn.functional.cross_entropy(model(spec), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 3.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        print(f"epoch {epoch}: loss={loss.item():.3f}")
    return model


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", default="data/xc_train.tsv")
    a = ap.parse_args()
    rows = [line.rstrip("\n").split("\t") for line in open(a.manifest)]
    species = sorted({r[1] for r in rows})
    items = [(r[0], species.index(r[1])) for r in rows]
    torch.save(train(items, len(species)).state_dict(), "birdsong_cnn.pt")
