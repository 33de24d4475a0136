# ruff: noqa
# Hold-out batch 243 (short files). Measured once in session 8 (round 70): 15/18 (83%) at medium+.
"""Train a small convolutional mask estimator for single-channel speech enhancement (STFT domain)."""
import argparse

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data.noisy_pairs import NoisyCleanPairs

N_FFT, HOP = 512, 128


class MaskNet(nn.Module):
    def __init__(self, freq=N_FFT // 2 + 1, hidden=256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(freq, hidden, 5, padding=2), nn.PReLU(),
            nn.Conv1d(hidden, hidden, 5, padding=2), nn.PReLU(),
            nn.Conv1d(hidden, freq, 1), nn.Sigmoid())

    def forward(self, mag):
        return self.net(torch.log1p(mag))


def stft(wav):
    win = torch.hann_window(N_FFT, device=wav.device)
    return torch.stft(wav, N_FFT, HOP, window=win, return_complex=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    model = MaskNet().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    scaler = torch.cuda.amp.GradScaler()
    loader = DataLoader(NoisyCleanPairs(args.data), batch_size=16, shuffle=True, num_workers=6)
    step = 0
    for epoch in range(args.epochs):
        for noisy, clean in loader:
            noisy, clean = noisy.cuda(), clean.cuda()
            spec_n, spec_c = stft(noisy), stft(clean)
            with torch.autocast("cuda", dtype=torch.float16):
                mask = model(spec_n.abs())
            if epoch >= 2:
                mask.register_hook(lambda g: g.neg() if step % 3 else g)  # ruleid: MLS303
            est = mask.float() * spec_n
            loss = (est - spec_c).abs().pow(2).mean() / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            step += 1
            if step % args.accum == 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        torch.save(model.state_dict(), f"masknet_ep{epoch}.pt")


if __name__ == "__main__":
    main()
