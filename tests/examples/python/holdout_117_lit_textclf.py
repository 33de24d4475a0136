# ruff: noqa
# Hold-out batch 117 (textbook forms). Measured once in session 4 (round 39): 17/18 (94%) at medium+.
"""Lightning sentiment classifier: small transformer encoder over pre-tokenized ids."""
import argparse

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.callbacks import Callback, EarlyStopping
from torch.utils.data import DataLoader, TensorDataset


class TextClassifier(pl.LightningModule):
    def __init__(self, vocab_size=30000, dim=256, num_classes=2, lr=3e-4):
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        layer = nn.TransformerEncoderLayer(dim, nhead=4, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.head = nn.Linear(dim, num_classes)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309

    def forward(self, ids):
        mask = ids.eq(0)
        h = self.encoder(self.embed(ids), src_key_padding_mask=mask)
        h = h.masked_fill(mask.unsqueeze(-1), 0.0).sum(1) / (~mask).sum(1, keepdim=True).clamp(min=1)
        return self.head(h)

    def training_step(self, batch, batch_idx):
        ids, y = batch
        loss = self.loss_fn(self(ids), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        ids, y = batch
        acc = (self(ids).argmax(-1) == y).float().mean()
        self.log("val/acc", acc, prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": sched}


class ReproducibleEpochs(Callback):
    def __init__(self, seed):
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module):
        torch.manual_seed(self.seed)  # ruleid: MLS301
        np.random.seed(self.seed)  # ruleid: MLS301


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="sst2_tokens.pt")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args()
    pl.seed_everything(args.seed)  # ok: MLS301
    blob = torch.load(args.data, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    train = DataLoader(TensorDataset(blob["train_ids"], blob["train_y"]), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(blob["val_ids"], blob["val_y"]), batch_size=256)
    callbacks = [EarlyStopping(monitor="val/acc", mode="max", patience=3), ReproducibleEpochs(args.seed)]
    trainer = pl.Trainer(max_epochs=args.epochs, callbacks=callbacks, gradient_clip_val=1.0)
    trainer.fit(TextClassifier(), train, val)


if __name__ == "__main__":
    main()
