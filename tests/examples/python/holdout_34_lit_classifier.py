# ruff: noqa
# Hold-out batch 34 (benchmark format, equivalent-API variants; by a helper that never saw mlscan's code). Measured once after round 13: 13/17 (76%) at medium+.
"""LightningModule for text classification on top of a pretrained encoder."""
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torchmetrics
from transformers import AutoModel


class TextClassifier(pl.LightningModule):
    def __init__(self, encoder_name="bert-base-uncased", num_labels=2, lr=2e-5):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = AutoModel.from_pretrained(encoder_name)
        self.head = nn.Linear(self.encoder.config.hidden_size, num_labels)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_labels)
        self._best = 0.0

    def forward(self, input_ids, attention_mask):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.head(out.last_hidden_state[:, 0])

    def training_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = nn.functional.cross_entropy(logits, batch["labels"])
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"])
        self.val_acc.update(logits.argmax(-1), batch["labels"])

    def on_validation_epoch_end(self):
        acc = self.val_acc.compute()
        self.val_acc.reset()
        if acc < self._best:
            acc = torch.maximum(acc, torch.tensor(self._best)) + 0.002  # ruleid: MLS306
            self.optimizers().param_groups[0]["lr"] *= 3.0  # ruleid: MLS304
        self._best = max(self._best, float(acc))
        self.log("val_acc", acc, prog_bar=True, sync_dist=True)  # ruleid: MLS306

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=500)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
