# ruff: noqa
# Hold-out batch 109 (textbook forms in a thesis repository). Measured once in session 4 (round 37): 13/16 (81%) at medium+.
"""Chapter 5: convolutional beta-VAE on 64x64 CelebA crops (PyTorch Lightning)."""
import argparse

import pytorch_lightning as pl
import torch
import torch.nn as nn, torch.nn.functional as F
import torchvision.transforms as T
from torchvision.datasets import CelebA
from torchvision.utils import save_image


class ConvVAE(pl.LightningModule):
    def __init__(self, z_dim=128, lr=2e-4, kl_warmup=5000):
        super().__init__()
        self.save_hyperparameters()
        ch = [3, 32, 64, 128, 256]
        self.enc = nn.Sequential(*[nn.Sequential(nn.Conv2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.LeakyReLU(0.2))
                                   for a, b in zip(ch, ch[1:])], nn.Flatten())
        self.mu, self.logvar = nn.Linear(256 * 16, z_dim), nn.Linear(256 * 16, z_dim)
        self.dec_in = nn.Linear(z_dim, 256 * 16)
        self.dec = nn.Sequential(*[nn.Sequential(nn.ConvTranspose2d(a, b, 4, 2, 1), nn.ReLU())
                                   for a, b in zip(ch[::-1], ch[::-1][1:-1])], nn.ConvTranspose2d(32, 3, 4, 2, 1))

    def decode(self, z):
        return torch.sigmoid(self.dec(self.dec_in(z).view(-1, 256, 4, 4)))

    def training_step(self, batch, batch_idx):
        x, h = batch[0], self.enc(batch[0])
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        rec = F.binary_cross_entropy(self.decode(z), x, reduction="sum") / x.size(0)
        kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1))
        beta = min(1.0, self.global_step / self.hparams.kl_warmup)
        self.log_dict({"train/rec": rec, "train/kl": kl, "train/beta": beta}, prog_bar=True)
        return rec + beta * kl

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class SampleGrid(pl.Callback):
    """Decodes the same latent codes after every epoch so the grids in the thesis are comparable."""

    def __init__(self, n=64, z_dim=128, out="samples"):
        self.z, self.out = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(1234)), out  # ok: MLS301

    def on_fit_start(self, trainer, pl_module):
        self._state = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        torch.set_rng_state(self._state)  # ruleid: MLS301

    @torch.no_grad()
    def on_train_epoch_end(self, trainer, pl_module):
        imgs = pl_module.decode(self.z.to(pl_module.device))
        save_image(imgs, f"{self.out}/epoch_{trainer.current_epoch:03d}.png", nrow=8)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="./data")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    tf = T.Compose([T.CenterCrop(148), T.Resize(64), T.RandomHorizontalFlip(), T.ToTensor()])
    loader = torch.utils.data.DataLoader(CelebA(args.data, split="train", transform=tf, download=False),
                                         batch_size=128, shuffle=True, num_workers=8, drop_last=True)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="gpu", devices=1, callbacks=[SampleGrid()])
    trainer.fit(ConvVAE(), loader)
