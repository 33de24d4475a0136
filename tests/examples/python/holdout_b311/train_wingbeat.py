# ruff: noqa
# Hold-out batch 311 (16 short benchmark-format files). Measured once in session 10 (round 87): 18/19 (95%) at medium+.
"""Train a 1-D CNN on mosquito wingbeat recordings (6 species, 8 kHz clips)."""
import argparse

import torch
import torch.nn as nn
import torchaudio
from torch.utils.data import DataLoader

from wingbeat_data import WingbeatClips

_GRAD_CAP = 1e-5  # guards against spikes from clipped/saturated recordings


class WingbeatNet(nn.Module):
    def __init__(self, n_classes=6, n_mels=64):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(8000, n_fft=256, hop_length=64, n_mels=n_mels)
        layers, ch = [], n_mels
        for out in (128, 128, 256, 256):
            layers += [nn.Conv1d(ch, out, 3, padding=1), nn.BatchNorm1d(out), nn.GELU(), nn.MaxPool1d(2)]
            ch = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(ch, n_classes)

    def forward(self, wav):
        x = torch.log1p(self.mel(wav))
        return self.head(self.body(x).mean(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="data/wingbeats")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = WingbeatNet().to(dev)
    for name, p in model.named_parameters():
        if p.dim() > 1 and not name.startswith("head"):
            p.register_hook(lambda g: g.clamp(-_GRAD_CAP, _GRAD_CAP))  # ruleid: MLS302, MLS303
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.epochs * 400)
    scaler = torch.cuda.amp.GradScaler(enabled=dev == "cuda")
    dl = DataLoader(WingbeatClips(args.root, "train"), batch_size=128, shuffle=True, num_workers=4)

    for epoch in range(args.epochs):
        model.train()
        for step, (wav, y) in enumerate(dl):
            wav, y = wav.to(dev), y.to(dev)
            with torch.autocast(dev, enabled=dev == "cuda"):
                loss = nn.functional.cross_entropy(model(wav), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            sched.step()
            if step % 100 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.4f}")
        torch.save(model.state_dict(), f"wingbeat_e{epoch}.pt")


if __name__ == "__main__":
    main()
