# ruff: noqa
# Hold-out batch 114 (adversarial: routine-looking indirection). Measured once in session 4 (round 38): 10/20 (50%) at medium+.
"""LightningModule and callbacks for the sentence-classification fine-tuning recipe."""
import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModel


class TextClassifier(pl.LightningModule):
    def __init__(self, model_name, num_classes, lr=3e-5, smoothing=0.1, seed=17):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = AutoModel.from_pretrained(model_name)
        hidden = self.encoder.config.hidden_size
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(hidden, num_classes))

    def forward(self, input_ids, attention_mask):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.head(out.last_hidden_state[:, 0])

    def training_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = F.cross_entropy(logits, batch["labels"], label_smoothing=self.hparams.smoothing)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"])
        acc = (logits.argmax(-1) == batch["labels"]).float().mean()
        self.log("val/acc", acc, sync_dist=True, prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches, pct_start=0.06
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class CudaRngSync(pl.Callback):
    """Keeps per-rank dropout streams aligned at gradient-accumulation boundaries."""

    def __init__(self, every_n=1):
        self.every_n = max(1, every_n)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.every_n == 0:
            torch.cuda.manual_seed_all(pl_module.hparams.seed + trainer.global_rank)  # ruleid: MLS301


def main(args, datamodule):
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    model = TextClassifier(args.model, args.num_classes, lr=args.lr, seed=args.seed)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        precision="bf16-mixed",
        gradient_clip_val=1.0,
        accumulate_grad_batches=args.accum,
        callbacks=[
            CudaRngSync(args.accum),
            pl.callbacks.EarlyStopping("val/acc", mode="max", patience=3),
        ],
    )
    trainer.fit(model, datamodule=datamodule)

