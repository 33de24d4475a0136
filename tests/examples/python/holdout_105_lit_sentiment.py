# ruff: noqa
# Hold-out batch 105 (textbook forms, company ML engineer style). Measured once in session 4 (round 36): 14/17 (82%) at medium+.
"""Lightning module and entry point for binary review sentiment on pre-tokenized tensors (DistilBERT)."""
import argparse

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset
from transformers import AutoModel


class SentimentClassifier(pl.LightningModule):
    def __init__(self, backbone="distilbert-base-uncased", lr=2e-5, num_labels=2):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = AutoModel.from_pretrained(backbone)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, num_labels)

    def forward(self, input_ids, attention_mask):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.head(out.last_hidden_state[:, 0])

    def training_step(self, batch, batch_idx):
        ids, mask, labels = batch
        loss = F.cross_entropy(self(ids, mask), labels, label_smoothing=0.1)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        ids, mask, labels = batch
        acc = (self(ids, mask).argmax(-1) == labels).float().mean()
        self.log("val/acc", acc, prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=500)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class EpochReproducibility(Callback):
    """Keeps the per-epoch data order stable so restarted runs line up."""

    def __init__(self, seed):
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module):
        pl.seed_everything(self.seed, workers=True)  # ruleid: MLS301
        pl_module.log("epoch_seed", float(self.seed))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="data/reviews_tok.pt")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--epochs", type=int, default=4)
    args = p.parse_args()

    pl.seed_everything(args.seed)  # ok: MLS301
    splits = torch.load(args.data, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    tr, va = (TensorDataset(*(splits[s][k] for k in ("input_ids", "attention_mask", "labels"))) for s in ("train", "val"))
    train_dl = DataLoader(tr, batch_size=32, shuffle=True, num_workers=4)
    val_dl = DataLoader(va, batch_size=64, num_workers=4)
    callbacks = [ModelCheckpoint(monitor="val/acc", mode="max", save_top_k=1),
                 EarlyStopping(monitor="val/acc", mode="max", patience=2), EpochReproducibility(args.seed)]
    trainer = pl.Trainer(max_epochs=args.epochs, precision="16-mixed", gradient_clip_val=1.0, callbacks=callbacks)
    trainer.fit(SentimentClassifier(), train_dl, val_dl)


if __name__ == "__main__":
    main()
