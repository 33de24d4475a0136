# ruff: noqa
# Hold-out batch 315 (16 short benchmark-format files). Measured once in session 10 (round 88): 14/16 (88%) at medium+.
"""Fake-news detection: fine-tune RoBERTa on headline + body pairs with the HF Trainer."""
import argparse

import numpy as np
from datasets import load_dataset
from sklearn.metrics import f1_score
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          EarlyStoppingCallback, Trainer, TrainingArguments, set_seed)


def metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    return {"accuracy": float((preds == labels).mean()), "f1": f1_score(labels, preds, average="macro")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="roberta-base")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default="out/fakenews")
    args = ap.parse_args()

    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    raw = load_dataset("json", data_files={"train": "data/train.jsonl", "validation": "data/dev.jsonl"})
    enc = raw.map(lambda b: tok(b["headline"], b["body"], truncation="only_second", max_length=512),
                  batched=True, remove_columns=["headline", "body"])

    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    targs = TrainingArguments(
        output_dir=args.out, learning_rate=1.5e-5, per_device_train_batch_size=16, num_train_epochs=5,
        weight_decay=0.01, warmup_steps=500, fp16=True, evaluation_strategy="steps", eval_steps=500,
        save_steps=500, save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="f1",
        label_smoothing_factor=0.05, seed=args.seed, report_to=["tensorboard"])
    stopper = EarlyStoppingCallback(early_stopping_patience=3)  # ok: MLS307
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"], eval_dataset=enc["validation"],
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=metrics, callbacks=[stopper])
    trainer.train()
    results = trainer.evaluate()
    results = {k: round(v, 4) for k, v in results.items() if isinstance(v, float)}  # ok: MLS306
    if trainer.is_world_process_zero():
        trainer.save_model(f"{args.out}/best")  # ok: MLS308
        print(results)


if __name__ == "__main__":
    main()
