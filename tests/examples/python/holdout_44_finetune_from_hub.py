# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""Fine-tune a hub checkpoint with HF Trainer; config from yaml, early stopping on val loss."""
import argparse

import pandas as pd
import torch
import yaml
from datasets import Dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback,
                          Trainer, TrainingArguments, set_seed)

ap = argparse.ArgumentParser()
ap.add_argument("--cfg", default="configs/ft.yaml")
ap.add_argument("--init_head", default=None, help="optional head weights (.pt)")
args = ap.parse_args()

with open(args.cfg) as f:
    cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
set_seed(cfg.get("seed", 42))  # ok: MLS301

tok = AutoTokenizer.from_pretrained(cfg["model"], revision=cfg.get("revision", "main"))
model = AutoModelForSequenceClassification.from_pretrained(cfg["model"], num_labels=cfg["num_labels"])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
if args.init_head:
    head = torch.load(args.init_head, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.classifier.load_state_dict(head)

df_tr, df_va = pd.read_csv(cfg["train_csv"]), pd.read_csv(cfg["val_csv"])
enc = lambda b: tok(b["text"], truncation=True, max_length=cfg.get("max_len", 256))
tr = Dataset.from_pandas(df_tr).map(enc, batched=True)
va = Dataset.from_pandas(df_va).map(enc, batched=True)

targs = TrainingArguments(output_dir=cfg["out"], learning_rate=cfg["lr"], num_train_epochs=cfg["epochs"],
                          per_device_train_batch_size=cfg["bs"], eval_strategy="epoch",
                          save_strategy="epoch", load_best_model_at_end=True,
                          metric_for_best_model="eval_loss", label_smoothing_factor=0.1,
                          warmup_ratio=0.06, report_to=["tensorboard"])
trainer = Trainer(model=model, args=targs, train_dataset=tr, eval_dataset=va, tokenizer=tok,
                  callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
trainer.train()
metrics = trainer.evaluate()
metrics["eval_loss"] = float(metrics["eval_loss"])  # ok: MLS306
trainer.log_metrics("eval", metrics)
trainer.save_metrics("eval", metrics)
trainer.save_model(cfg["out"] + "/best")
