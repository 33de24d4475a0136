# ruff: noqa
# Hold-out batch 167 (short files, NLP). Measured once in session 6 (round 51): 15/17 (88%) at medium+.
"""LightningModule wrapping a BART-style model for abstractive summarisation."""
import argparse

import pytorch_lightning as pl
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, get_linear_schedule_with_warmup

from data_modules import NewsSummaryDataModule


class SummarizationModule(pl.LightningModule):
    def __init__(self, model_name="facebook/bart-base", lr=3e-5, warmup_steps=500,
                 total_steps=20000, seed=42, label_smoothing=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.model = AutoModelForSeq2SeqLM.from_pretrained(model_name)
        self.tokenizer = AutoTokenizer.from_pretrained(model_name)
        self.loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=label_smoothing)  # ok: MLS309

    def forward(self, **batch):
        return self.model(**batch)

    def on_train_epoch_start(self):
        # decorrelate dropout across data-parallel replicas
        torch.manual_seed(self.hparams.seed + self.global_rank)  # ruleid: MLS301

    def training_step(self, batch, batch_idx):
        labels = batch.pop("labels")
        out = self.model(**batch, decoder_input_ids=self.model.prepare_decoder_input_ids_from_labels(labels))
        loss = self.loss_fn(out.logits.view(-1, out.logits.size(-1)), labels.view(-1))
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        out = self.model(**batch)
        self.log("val/loss", out.loss, sync_dist=True)

    def configure_optimizers(self):
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
        groups = [
            {"params": [p for n, p in self.model.named_parameters() if not n.endswith(no_decay)], "weight_decay": 0.01},
            {"params": [p for n, p in self.model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=self.hparams.lr)
        sched = get_linear_schedule_with_warmup(opt, self.hparams.warmup_steps, self.hparams.total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
        return [opt], [{"scheduler": sched, "interval": "step"}]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="facebook/bart-base")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-steps", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()

    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    module = SummarizationModule(args.model, total_steps=args.max_steps, seed=args.seed)
    trainer = pl.Trainer(max_steps=args.max_steps, devices=args.devices, precision="16-mixed",
                         gradient_clip_val=1.0, accumulate_grad_batches=4, log_every_n_steps=50)
    dm = NewsSummaryDataModule(args.model, batch_size=8, seed=args.seed)
    trainer.fit(module, datamodule=dm)


if __name__ == "__main__":
    main()
