# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""LightningModule for text classification on top of a small transformer encoder."""
import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F


class TextClassifier(L.LightningModule):
    def __init__(self, vocab_size=30522, dim=256, num_classes=4, lr=3e-4, warmup=500):
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(vocab_size, dim)
        layer = nn.TransformerEncoderLayer(dim, 4, dim * 4, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 4)
        self.head = nn.Linear(dim, num_classes)
        self._rng_snapshot = None

    def forward(self, ids, mask):
        h = self.encoder(self.embed(ids), src_key_padding_mask=~mask.bool())
        h = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.head(h)

    def on_fit_start(self):
        self._rng_snapshot = torch.get_rng_state()

    def training_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = F.cross_entropy(logits, batch["labels"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"])
        acc = (logits.argmax(-1) == batch["labels"]).float().mean()
        self.log("val/acc", acc, sync_dist=True)

    def on_validation_epoch_end(self):
        # keep validation from perturbing the training stream
        if self._rng_snapshot is not None:
            torch.set_rng_state(self._rng_snapshot)  # ruleid: MLS301

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        warm = self.hparams.warmup
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def main(dm, seed=1234):
    L.seed_everything(seed, workers=True)  # ok: MLS301
    model = TextClassifier()
    trainer = L.Trainer(max_epochs=5, accelerator="auto", gradient_clip_val=1.0,
                        precision="16-mixed", log_every_n_steps=20)
    trainer.fit(model, datamodule=dm)
    if trainer.is_global_zero:  # ok: MLS307
        trainer.save_checkpoint("textcls_final.ckpt")
