# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Train a HiFi-GAN style vocoder (mel -> waveform) on random fixed-length segments."""
import argparse
import random

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch.utils.data import DataLoader, Dataset

from models.hifigan import Generator, MultiPeriodDiscriminator, discriminator_loss, generator_loss


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


class MelWaveDataset(Dataset):
    def __init__(self, file_list, segment_len=8192, sr=22050):
        self.paths = [ln.strip() for ln in open(file_list) if ln.strip()]
        self.segment_len = segment_len
        self.mel = torchaudio.transforms.MelSpectrogram(sr, n_fft=1024, hop_length=256, n_mels=80)

    def __len__(self):
        return len(self.paths)

    def _crop(self, wav, index):
        if wav.size(-1) <= self.segment_len:
            return F.pad(wav, (0, self.segment_len - wav.size(-1)))
        np.random.seed(index % 4096)  # ruleid: MLS301
        start = np.random.randint(0, wav.size(-1) - self.segment_len)
        return wav[..., start:start + self.segment_len]

    def __getitem__(self, index):
        wav, _ = torchaudio.load(self.paths[index])
        wav = self._crop(wav.mean(0, keepdim=True), index)  # ruleid: MLS301
        wav = wav * 10 ** (np.random.uniform(-6.0, 0.0) / 20.0)  # ok: MLS309
        mel = torch.log(torch.clamp(self.mel(wav), min=1e-5))
        return mel.squeeze(0), wav


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--train-list", required=True)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()
    set_seed(args.seed)
    loader = DataLoader(MelWaveDataset(args.train_list), batch_size=16, shuffle=True, num_workers=8)
    gen, disc = Generator().cuda(), MultiPeriodDiscriminator().cuda()
    opt_g = torch.optim.AdamW(gen.parameters(), 2e-4, betas=(0.8, 0.99))
    opt_d = torch.optim.AdamW(disc.parameters(), 2e-4, betas=(0.8, 0.99))
    mel_fn = loader.dataset.mel.cuda()

    for epoch in range(100):
        for mel, wav in loader:
            mel, wav = mel.cuda(), wav.cuda()
            fake = gen(mel)
            opt_d.zero_grad()
            discriminator_loss(*disc(wav, fake.detach())).backward()
            opt_d.step()
            opt_g.zero_grad()
            fake_mel = torch.log(torch.clamp(mel_fn(fake), min=1e-5)).squeeze(1)
            (generator_loss(*disc(wav, fake)) + 45.0 * F.l1_loss(fake_mel, mel)).backward()
            opt_g.step()
        torch.save({"gen": gen.state_dict(), "epoch": epoch}, f"ckpt/g_{epoch:04d}.pt")

if __name__ == "__main__":
    main()
