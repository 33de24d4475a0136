# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""Lightning module for slot-value dialogue state tracking on MultiWOZ-style data.

The encoder reads "[CLS] slot [SEP] dialogue history" and a classification
head predicts the value index for that slot (including `none` and `dontcare`).
"""
import argparse

import pytorch_lightning as pl
import torch
import torch.nn as nn
from transformers import AutoModel, get_linear_schedule_with_warmup


class SlotValueTagger(pl.LightningModule):
    def __init__(self, encoder_name, num_values, lr=3e-5, warmup=500, total_steps=20000):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = AutoModel.from_pretrained(encoder_name)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(self.encoder.config.hidden_size, num_values))
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)  # ok: MLS309

    def forward(self, input_ids, attention_mask):
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        return self.head(h)

    def training_step(self, batch, _):
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = self.loss_fn(logits, batch["value_id"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        logits = self(batch["input_ids"], batch["attention_mask"])
        acc = (logits.argmax(-1) == batch["value_id"]).float().mean()
        self.log("val/slot_acc", acc, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        sched = get_linear_schedule_with_warmup(opt, self.hparams.warmup, self.hparams.total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
        return [opt], [{"scheduler": sched, "interval": "step"}]


class EpochStateCallback(pl.Callback):
    """Snapshots the RNG at epoch start so a mid-epoch restart replays the same order."""

    def __init__(self):
        self._snapshot = None

    def on_train_epoch_start(self, trainer, pl_module):
        if self._snapshot is None:
            self._snapshot = torch.get_rng_state()
        else:
            torch.set_rng_state(self._snapshot)  # ruleid: MLS301


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--encoder", default="bert-base-uncased")
    p.add_argument("--num-values", type=int, default=912)
    p.add_argument("--seed", type=int, default=13)
    args = p.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    model = SlotValueTagger(args.encoder, args.num_values)
    trainer = pl.Trainer(max_epochs=6, gradient_clip_val=1.0, callbacks=[EpochStateCallback()])
    return trainer, model


if __name__ == "__main__":
    main()
