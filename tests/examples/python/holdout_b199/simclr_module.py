# ruff: noqa
# Hold-out batch 199 (16 short benchmark-format files). Measured once in session 7 (round 59): 13/17 (76%) at medium+, 1 benign line flagged.
"""SimCLR pretraining LightningModule, NT-Xent loss and training callbacks."""
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def nt_xent(z1, z2, temperature=0.5):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    n = z1.size(0)
    sim.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


class SimCLR(pl.LightningModule):
    def __init__(self, lr=0.3, temperature=0.5, max_epochs=200):
        super().__init__()
        self.save_hyperparameters()
        backbone = torchvision.models.resnet18()
        dim = backbone.fc.in_features
        backbone.fc = nn.Identity()
        self.encoder = backbone
        self.projector = nn.Sequential(nn.Linear(dim, 2048), nn.ReLU(inplace=True), nn.Linear(2048, 128))
        for m in self.projector.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
                nn.init.zeros_(m.bias)

    def training_step(self, batch, batch_idx):
        (x1, x2), _ = batch
        z1 = self.projector(self.encoder(x1))
        z2 = self.projector(self.encoder(x2))
        loss = nt_xent(z1, z2, self.hparams.temperature)
        self.log("train/nt_xent", loss, prog_bar=True, sync_dist=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=1e-6)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.hparams.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return [opt], [sched]


class RngStateCallback(pl.Callback):
    """Keeps the CPU generator stream aligned so resumed runs see the same augmentation order."""

    def __init__(self):
        self._state = None

    def on_train_start(self, trainer, pl_module):
        self._state = torch.get_rng_state()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._state is not None:
            torch.set_rng_state(self._state)  # ruleid: MLS301


def main(datamodule, max_epochs=200, seed=42):
    pl.seed_everything(seed, workers=True)  # ok: MLS301
    model = SimCLR(max_epochs=max_epochs)
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="gpu", devices=4, strategy="ddp",
                         precision="16-mixed", callbacks=[RngStateCallback(),
                                                          pl.callbacks.LearningRateMonitor("epoch")])
    trainer.fit(model, datamodule=datamodule)
    return model
