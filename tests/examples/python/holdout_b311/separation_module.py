# ruff: noqa
# Hold-out batch 311 (16 short benchmark-format files). Measured once in session 10 (round 87): 18/19 (95%) at medium+.
"""Lightning module for two-stem music source separation (vocals / accompaniment) with a Conv-TasNet."""
import random

import pytorch_lightning as pl
import soundfile as sf
import torch
import yaml
from torch.utils.data import Dataset
from torchaudio.models import ConvTasNet


def si_sdr(est, ref, eps=1e-8):
    ref = ref - ref.mean(-1, keepdim=True)
    est = est - est.mean(-1, keepdim=True)
    proj = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps) * ref
    return 10 * torch.log10(proj.pow(2).sum(-1) / ((est - proj).pow(2).sum(-1) + eps) + eps)


class StemMixes(Dataset):
    def __init__(self, tracks, seg=4 * 16000, train=True):
        self.tracks, self.seg, self.train = tracks, seg, train

    def __len__(self):
        return len(self.tracks) * (8 if self.train else 1)

    def __getitem__(self, i):
        vox_path, acc_path = self.tracks[i % len(self.tracks)]
        vox, acc = (torch.from_numpy(sf.read(p, dtype="float32", always_2d=True)[0]).mean(-1) for p in (vox_path, acc_path))
        start = random.randint(0, max(0, vox.numel() - self.seg)) if self.train else 0
        vox, acc = vox[start:start + self.seg], acc[start:start + self.seg]
        if self.train:
            vox = vox * random.uniform(0.25, 1.25)  # ok: MLS309
            if random.random() < 0.5:
                acc = torch.roll(acc, random.randint(0, self.seg - 1))  # ok: MLS309
        return vox + acc, torch.stack([vox, acc])


class SeparationModule(pl.LightningModule):
    def __init__(self, cfg_path="configs/tasnet.yaml"):
        super().__init__()
        with open(cfg_path) as fh:
            self.cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.net = ConvTasNet(num_sources=2, **self.cfg.get("model", {}))

    def training_step(self, batch, _):
        mix, stems = batch
        loss = -si_sdr(self.net(mix.unsqueeze(1)), stems).mean()
        self.log("train/neg_si_sdr", loss)
        return loss

    def validation_step(self, batch, _):
        mix, stems = batch
        sdr = si_sdr(self.net(mix.unsqueeze(1)), stems)
        self.log("val/si_sdr_vocals", sdr[:, 0].mean(), sync_dist=True)  # ok: MLS306
        self.log("val/si_sdr", sdr.mean(), sync_dist=True, prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.cfg.get("lr", 1e-3))
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/si_sdr"}}  # ok: MLS302, MLS303, MLS304, MLS305

    def on_before_optimizer_step(self, optimizer):
        torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm=5.0)  # ok: MLS302, MLS303, MLS304, MLS305
