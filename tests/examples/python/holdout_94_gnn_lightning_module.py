# ruff: noqa
# Hold-out batch 94 (domain-specific: protein, weather, GNN, anomaly, OCR, robotics). Measured once in session 4 (round 33): 14/18 (78%) at medium+.
"""Two-layer GCN for semi-supervised node classification (Planetoid splits),
trained full-batch with Lightning."""
import argparse
import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from torch_geometric.datasets import Planetoid
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GCNConv


class GCN(pl.LightningModule):
    def __init__(self, in_dim, hidden, n_classes, lr=0.01, weight_decay=5e-4, dropout=0.5):
        super().__init__()
        self.save_hyperparameters()
        self.conv1 = GCNConv(in_dim, hidden)
        self.conv2 = GCNConv(hidden, n_classes)

    def forward(self, x, edge_index):
        x = F.dropout(x, p=self.hparams.dropout, training=self.training)
        x = F.relu(self.conv1(x, edge_index))
        x = F.dropout(x, p=self.hparams.dropout, training=self.training)
        return self.conv2(x, edge_index)

    def training_step(self, data, batch_idx):
        out = self(data.x, data.edge_index)
        loss = F.cross_entropy(out[data.train_mask], data.y[data.train_mask], label_smoothing=0.1)  # ok: MLS309
        self.log("train/loss", loss, batch_size=1)
        return loss

    def validation_step(self, data, batch_idx):
        pred = self(data.x, data.edge_index).argmax(-1)
        acc = (pred[data.val_mask] == data.y[data.val_mask]).float().mean()
        self.log("val/acc", acc, prog_bar=True, batch_size=1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)


class RNGSnapshot(pl.Callback):
    """Keeps the CPU RNG state from the first epoch so a failed epoch can be replayed."""
    def __init__(self):
        self._state = None

    def on_train_epoch_start(self, trainer, pl_module):
        if self._state is None:
            self._state = torch.get_rng_state()
        else:
            torch.set_rng_state(self._state)  # ruleid: MLS301


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="data/Planetoid")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    ds = Planetoid(args.root, "Cora")
    loader = DataLoader(ds, batch_size=1)
    model = GCN(ds.num_features, 64, ds.num_classes)
    stopper = EarlyStopping(monitor="val/acc", mode="max", patience=50)
    trainer = pl.Trainer(max_epochs=400, callbacks=[stopper, RNGSnapshot()], log_every_n_steps=1)
    trainer.fit(model, loader, loader)


if __name__ == "__main__":
    main()
