# ruff: noqa
# Hold-out batch 399 (16 short files, one domain each). Measured once in session 16 (round 109): 14/17 (82%) at medium+.
"""Fine-tune DistilBERT on binary sentiment (SST-2 / IMDB) with the HF Trainer."""
import argparse

import numpy as np
from datasets import load_dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model_name", default="distilbert-base-uncased")
    p.add_argument("--revision", default="main")
    p.add_argument("--dataset", default="sst2")
    p.add_argument("--output_dir", default="runs/distilbert-sst2")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    return {"accuracy": float((preds == labels).mean())}


def main():
    args = parse_args()
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(
        args.model_name,
        revision=args.revision,  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    )
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model_name,
        num_labels=2,
        trust_remote_code=True,  # ruleid: MLS106
    )
    raw = load_dataset("glue", args.dataset) if args.dataset == "sst2" else load_dataset(args.dataset)
    text_col = "sentence" if args.dataset == "sst2" else "text"
    encoded = raw.map(lambda b: tokenizer(b[text_col], truncation=True, max_length=256), batched=True)
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=32,
        evaluation_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        seed=args.seed,
    )
    trainer = Trainer(
        model=model, args=training_args, train_dataset=encoded["train"],
        eval_dataset=encoded["validation"] if "validation" in encoded else encoded["test"],
        data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics,
    )
    trainer.train()
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    main()
