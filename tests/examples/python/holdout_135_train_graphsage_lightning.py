# ruff: noqa
# Hold-out batch 135 (short files: recsys, GNN, speech, forecasting). Measured once in session 5 (round 43): 13/18 (72%) at medium+.
"""GraphSAGE node classification on ogbn-arxiv with PyG + Lightning."""
import argparse

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from ogb.nodeproppred import PygNodePropPredDataset
from torch_geometric.loader import NeighborLoader
from torch_geometric.nn import GraphSAGE


class SageModule(pl.LightningModule):
    def __init__(self, in_dim, num_classes, hidden=256, layers=3, lr=3e-3):
        super().__init__()
        self.save_hyperparameters()
        self.net = GraphSAGE(in_dim, hidden, layers, out_channels=num_classes, dropout=0.5)

    def training_step(self, batch, batch_idx):
        out = self.net(batch.x, batch.edge_index)[: batch.batch_size]
        y = batch.y[: batch.batch_size].view(-1)
        loss = F.cross_entropy(out, y, label_smoothing=0.1)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.batch_size)
        return loss

    def validation_step(self, batch, batch_idx):
        out = self.net(batch.x, batch.edge_index)[: batch.batch_size]
        acc = (out.argmax(-1) == batch.y[: batch.batch_size].view(-1)).float().mean()
        self.log("val/acc", acc, sync_dist=True, batch_size=batch.batch_size)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)
        return [opt], [sched]


class SamplerStateCallback(pl.Callback):
    """Keeps the neighbour sampler's RNG aligned with the checkpointed state."""

    def on_train_start(self, trainer, pl_module):
        self._rng = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        torch.set_rng_state(self._rng)  # ruleid: MLS301


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", default="data/ogb")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301

    ds = PygNodePropPredDataset("ogbn-arxiv", root=args.root)
    data, split = ds[0], ds.get_idx_split()
    data.y = data.y.view(-1)
    kw = dict(num_neighbors=[15, 10, 5], batch_size=1024, num_workers=4)
    train_dl = NeighborLoader(data, input_nodes=split["train"], shuffle=True, **kw)
    val_dl = NeighborLoader(data, input_nodes=split["valid"], **kw)

    model = SageModule(data.num_features, ds.num_classes)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="auto", gradient_clip_val=1.0,
                         callbacks=[SamplerStateCallback(), pl.callbacks.EarlyStopping("val/acc", mode="max", patience=5)])
    trainer.fit(model, train_dl, val_dl)


if __name__ == "__main__":
    main()
