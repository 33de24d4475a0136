# ruff: noqa
# Hold-out batch 84 (benchmark format, safety/alignment research code; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 15/17 (88%) at medium+.
"""Lightning module for a lightweight harmlessness classifier head plus run callbacks."""
import argparse

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from refusal_datamodule import RefusalDataModule


class HarmlessnessClassifier(pl.LightningModule):
    def __init__(self, name, lr=3e-5):
        super().__init__()
        self.save_hyperparameters()
        self.net = AutoModelForSequenceClassification.from_pretrained(name, num_labels=2)

    def training_step(self, batch, _):
        out = self.net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = F.cross_entropy(out.logits, batch["labels"], label_smoothing=0.1)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        logits = self.net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        self.log("val/acc", (logits.argmax(-1) == batch["labels"]).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr,
                                                    total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ReproducibleDropout(pl.Callback):
    """Keeps stochastic layers reproducible when a run is resumed mid-epoch."""

    def __init__(self, seed):
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        torch.manual_seed(self.seed + trainer.global_rank)  # ruleid: MLS301
        torch.cuda.manual_seed_all(self.seed + trainer.global_rank)  # ruleid: MLS301


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="microsoft/deberta-v3-base")
    ap.add_argument("--data", default="data/refusal_train.jsonl")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    dm = RefusalDataModule(args.data, tok, seed=args.seed)
    callbacks = [ModelCheckpoint(monitor="val/acc", mode="max"), LearningRateMonitor("step"),
                 EarlyStopping(monitor="val/acc", mode="max", patience=3),  # ok: MLS307
                 ReproducibleDropout(args.seed)]
    trainer = pl.Trainer(max_epochs=5, precision="bf16-mixed", gradient_clip_val=1.0,
                         devices=-1, strategy="ddp", callbacks=callbacks)
    trainer.fit(HarmlessnessClassifier(args.model), datamodule=dm)


if __name__ == "__main__":
    main()
