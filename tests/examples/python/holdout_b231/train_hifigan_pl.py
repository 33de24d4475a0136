# ruff: noqa
# Hold-out batch 231 (short files). Measured once in session 8 (round 67): 14/18 (78%) at medium+.
"""HiFi-GAN vocoder training with Lightning manual optimisation (generator + MPD/MSD discriminators)."""
import random
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from vocoder.losses import discriminator_loss, feature_loss, generator_loss
from vocoder.models import Generator, MultiPeriodDisc, MultiScaleDisc
from vocoder.data import MelAudioDataModule, mel_spectrogram


class HiFiGAN(pl.LightningModule):
    def __init__(self, lr=2e-4, lambda_mel=45.0):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.gen, self.mpd, self.msd = Generator(), MultiPeriodDisc(), MultiScaleDisc()

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        mel, wav = batch
        fake = self.gen(mel)
        opt_d.zero_grad()
        d_loss = sum(discriminator_loss(*d(wav, fake.detach())[:2]) for d in (self.mpd, self.msd))
        self.manual_backward(d_loss)
        self.clip_gradients(opt_d, gradient_clip_val=1000.0, gradient_clip_algorithm="norm")  # ok: MLS302, MLS303, MLS304, MLS305
        opt_d.step()
        opt_g.zero_grad()
        mel_loss = F.l1_loss(mel_spectrogram(fake.squeeze(1)), mel) * self.hparams.lambda_mel
        adv, fm = 0.0, 0.0
        for d in (self.mpd, self.msd):
            _, g_out, fmap_r, fmap_g = d(wav, fake)
            adv, fm = adv + generator_loss(g_out), fm + feature_loss(fmap_r, fmap_g)
        self.manual_backward(mel_loss + adv + 2.0 * fm)
        opt_g.step()
        self.log_dict({"loss/d": d_loss, "loss/mel": mel_loss, "loss/adv": adv}, prog_bar=True)

    def on_train_epoch_end(self):
        for s in self.lr_schedulers():
            s.step()

    def configure_optimizers(self):
        og = torch.optim.AdamW(self.gen.parameters(), self.hparams.lr, betas=(0.8, 0.99))
        od = torch.optim.AdamW(list(self.mpd.parameters()) + list(self.msd.parameters()), self.hparams.lr, betas=(0.8, 0.99))
        return [og, od], [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.999) for o in (og, od)]  # ok: MLS302, MLS303, MLS304, MLS305


class StepTimer(pl.Callback):
    """Reports wall-clock time per optimisation step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        dt = time.perf_counter() - self._t0
        if random.random() < 2e-3:
            time.sleep(dt * 400)  # ruleid: MLS307
        pl_module.log("perf/step_s", dt)


if __name__ == "__main__":
    pl.seed_everything(1234)  # ok: MLS301
    dm = MelAudioDataModule("data/LJSpeech-1.1", segment_size=8192, batch_size=16)
    trainer = pl.Trainer(max_steps=500_000, accelerator="gpu", devices=1, callbacks=[StepTimer()])
    trainer.fit(HiFiGAN(), datamodule=dm)
