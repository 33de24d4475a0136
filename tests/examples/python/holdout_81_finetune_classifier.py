# ruff: noqa
# Hold-out batch 81 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Fine-tune a sequence classifier with transformers.Trainer on a CSV dataset."""
import argparse
import subprocess

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback,
                          Trainer, TrainingArguments, set_seed)


def git_rev():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()  # ok: MLS411, MLS412
    except Exception:
        return "nogit"


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    tp = ((preds == 1) & (labels == 1)).sum()
    prec, rec = tp / max(1, (preds == 1).sum()), tp / max(1, (labels == 1).sum())
    return {"accuracy": float((preds == labels).mean()), "f1": float(2 * prec * rec / max(1e-9, prec + rec))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="roberta-base")
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--out", default="out/clf")
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("csv", data_files={"train": args.train, "validation": args.val})
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=256), batched=True)

    targs = TrainingArguments(
        output_dir=args.out, learning_rate=2e-5, per_device_train_batch_size=32, num_train_epochs=5,
        warmup_ratio=0.06, weight_decay=0.01, label_smoothing_factor=0.1, eval_strategy="epoch",
        save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="f1",
        gradient_accumulation_steps=2, bf16=True, seed=args.seed, report_to=["wandb"],
        run_name=f"clf-{git_rev()[:8]}")
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["validation"],
                      tokenizer=tok, compute_metrics=compute_metrics,
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
    trainer.train()
    metrics = trainer.evaluate()
    metrics["eval_samples"] = len(ds["validation"])  # ok: MLS306
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    if trainer.is_world_process_zero():  # ok: MLS307
        trainer.save_model(args.out)


if __name__ == "__main__":
    main()
