# ruff: noqa
# Hold-out batch 231 (short files). Measured once in session 8 (round 67): 14/18 (78%) at medium+.
"""Plain-PyTorch training of a MelGAN-style vocoder with AMP, resumable checkpoints and fixed seeding."""
import os
import random
import signal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vocoder.data import SegmentDataset, mel_spectrogram
from vocoder.models import Generator, MultiScaleDisc

SEED, CKPT = 3407, "ckpt/vocoder_last.pt"


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def main():
    torch.manual_seed(SEED)  # ok: MLS301
    loader = DataLoader(SegmentDataset("data/vctk", segment=8192), batch_size=32, shuffle=True, num_workers=8,
                        worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(SEED), drop_last=True)
    gen, disc = Generator().cuda(), MultiScaleDisc().cuda()
    opt_g = torch.optim.Adam(gen.parameters(), 1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), 1e-4, betas=(0.5, 0.9))
    scaler = torch.cuda.amp.GradScaler()
    step = 0
    if os.path.exists(CKPT):
        ck = torch.load(CKPT, map_location="cuda", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        gen.load_state_dict(ck["gen"]), disc.load_state_dict(ck["disc"])
        opt_g.load_state_dict(ck["opt_g"]), opt_d.load_state_dict(ck["opt_d"])
        step = ck["step"]

    def save(*_):
        os.makedirs(os.path.dirname(CKPT), exist_ok=True)
        torch.save({"gen": gen.state_dict(), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(),
                    "opt_d": opt_d.state_dict(), "step": step}, CKPT)
    signal.signal(signal.SIGUSR1, lambda *a: (save(), os._exit(0)))  # ok: MLS307

    while step < 400_000:
        for wav in loader:
            wav = wav.cuda(non_blocking=True)
            mel = mel_spectrogram(wav.squeeze(1))
            with torch.autocast("cuda", dtype=torch.float16):
                fake = gen(mel)
                d_loss = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean()
                             for r, f in zip(disc(wav), disc(fake.detach())))
            opt_d.zero_grad(set_to_none=True)
            scaler.scale(d_loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt_d)
            with torch.autocast("cuda", dtype=torch.float16):
                g_adv = sum(-f.mean() for f in disc(fake))
                g_loss = g_adv + 10.0 * F.l1_loss(mel_spectrogram(fake.squeeze(1).float()), mel)
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(g_loss).backward()
            scaler.unscale_(opt_g)
            torch.nn.utils.clip_grad_norm_(gen.parameters(), max_norm=5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt_g)
            scaler.update()
            step += 1
            if step % 5000 == 0:
                save()


if __name__ == "__main__":
    main()
