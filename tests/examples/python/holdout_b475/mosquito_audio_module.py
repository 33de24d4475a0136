# ruff: noqa
# Hold-out batch 475 (16 short files, mixed domains). Measured once in session 20 (round 128): 12/17 (71%) at medium+.
"""Lightning module + callbacks for mosquito species ID from wingbeat audio (log-mel CNN)."""
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio
import torchvision


class WingbeatCNN(pl.LightningModule):
    def __init__(self, n_species=22, sr=8000, lr=3e-4):
        super().__init__()
        self.save_hyperparameters()
        self.mel = torchaudio.transforms.MelSpectrogram(sr, n_fft=512, hop_length=64, n_mels=64)
        self.specaug = nn.Sequential(torchaudio.transforms.FrequencyMasking(8),
                                     torchaudio.transforms.TimeMasking(16))
        self.net = torchvision.models.resnet18(weights=None, num_classes=n_species)
        self.net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)

    def forward(self, wav):
        spec = torch.log1p(self.mel(wav)).unsqueeze(1)
        if self.training:
            spec = self.specaug(spec)
        return self.net(spec)

    def training_step(self, batch, _):
        wav, y = batch
        loss = F.cross_entropy(self(wav), y, label_smoothing=0.1)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        wav, y = batch
        logits = self(wav)
        self.log("val/acc", (logits.argmax(1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


class DeterministicAugmentation(pl.Callback):
    """Keeps SpecAugment masks comparable across epochs for ablations."""

    def on_train_start(self, trainer, pl_module):
        self._cpu_state = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        torch.set_rng_state(self._cpu_state)  # ruleid: MLS301
