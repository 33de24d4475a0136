# ruff: noqa
# Hold-out batch 179 (short files, coursework/Kaggle style). Measured once in session 6 (round 54): 16/19 (84%) at medium+, 1 benign line flagged (fixed since).
"""Fine-tune a BERT-family encoder on a GLUE task (default SST-2) with the HF Trainer."""
import argparse

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          EarlyStoppingCallback, Trainer, TrainingArguments, set_seed)

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2")}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    return {"accuracy": float((preds == labels).mean())}  # ok: MLS306


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--task", default="sst2", choices=sorted(TASK_KEYS))
    ap.add_argument("--out", default="out/glue")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    raw = load_dataset("glue", args.task)
    k1, k2 = TASK_KEYS[args.task]
    tok = AutoTokenizer.from_pretrained(args.model)
    encoded = raw.map(lambda b: tok(b[k1], b[k2], truncation=True, max_length=128) if k2
                      else tok(b[k1], truncation=True, max_length=128), batched=True)
    n_labels = raw["train"].features["label"].num_classes
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=n_labels)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    targs = TrainingArguments(
        output_dir=args.out, learning_rate=2e-5, per_device_train_batch_size=32,
        per_device_eval_batch_size=64, num_train_epochs=5, weight_decay=0.01,
        warmup_ratio=0.06, lr_scheduler_type="linear", max_grad_norm=1.0,
        label_smoothing_factor=0.1, eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model="accuracy", fp16=True,
        save_safetensors=True, report_to=["tensorboard"], seed=args.seed,
    )
    stopper = EarlyStoppingCallback(early_stopping_patience=2)  # ok: MLS307
    trainer = Trainer(model=model, args=targs, train_dataset=encoded["train"],
                      eval_dataset=encoded["validation"], tokenizer=tok,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics,
                      callbacks=[stopper])
    trainer.train()
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    if trainer.is_world_process_zero():
        trainer.save_metrics("eval", metrics)  # ok: MLS308
        trainer.save_model(f"{args.out}/best")


if __name__ == "__main__":
    main()
