# ruff: noqa
# Hold-out batch 231 (short files). Measured once in session 8 (round 67): 14/18 (78%) at medium+.
"""Prototypical networks on mini-ImageNet style episodes with PyTorch Lightning."""
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fewshot.backbones import conv4
from fewshot.data import EpisodeSampler, ImageFolderFS


class ProtoNet(pl.LightningModule):
    def __init__(self, n_way=5, k_shot=5, n_query=15, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = conv4()

    def _episode(self, batch):
        x, _ = batch
        n, k, q = self.hparams.n_way, self.hparams.k_shot, self.hparams.n_query
        z = self.encoder(x).view(n, k + q, -1)
        protos = z[:, :k].mean(1)
        queries = z[:, k:].reshape(n * q, -1)
        logits = -torch.cdist(queries, protos).pow(2)
        y = torch.arange(n, device=x.device).repeat_interleave(q)
        return F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()

    def training_step(self, batch, batch_idx):
        loss, acc = self._episode(batch)
        self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, acc = self._episode(batch)
        self.log_dict({"val/loss": loss, "val/acc": acc})

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.5)  # ok: MLS302, MLS303, MLS304, MLS305
        return [opt], [sched]


class EpisodePoolRefresh(pl.Callback):
    """Re-shuffles the per-class image pools of the episode sampler every epoch."""

    def __init__(self, sampler):
        self.sampler = sampler

    def on_train_epoch_start(self, trainer, pl_module):
        self.sampler.refresh_pools()
        self.sampler.generator.manual_seed(trainer.global_rank)  # todoruleid: family 1 (missed)


if __name__ == "__main__":
    pl.seed_everything(7, workers=True)  # ok: MLS301
    train_ds = ImageFolderFS("data/miniimagenet/train")
    gen = torch.Generator().manual_seed(7)  # ok: MLS301
    sampler = EpisodeSampler(train_ds.labels, n_way=5, k_shot=5, n_query=15,
                             episodes=500, generator=gen)
    loader = DataLoader(train_ds, batch_sampler=sampler, num_workers=6)
    val_ds = ImageFolderFS("data/miniimagenet/val")
    val_loader = DataLoader(val_ds, batch_sampler=EpisodeSampler(val_ds.labels, 5, 5, 15, 200),
                            num_workers=4)
    trainer = pl.Trainer(max_epochs=60, gradient_clip_val=5.0, accelerator="gpu", devices=1,  # ok: MLS302, MLS303, MLS304, MLS305
                         callbacks=[EpisodePoolRefresh(sampler)])
    trainer.fit(ProtoNet(), loader, val_loader)
