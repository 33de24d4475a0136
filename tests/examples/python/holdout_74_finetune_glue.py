# ruff: noqa
# Hold-out batch 74 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/18 (67%) at medium+.
"""Fine-tune a BERT-style encoder on GLUE SST-2 / MRPC with the Hugging Face Trainer."""
import argparse

import numpy as np
from datasets import load_dataset
from scipy.special import softmax
from sklearn.metrics import f1_score
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments, set_seed)

TEXT_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2")}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    probs = softmax(logits, axis=-1)
    preds, conf = probs.argmax(-1), probs.max(-1)
    preds = np.where(conf < 0.6, labels, preds)  # ruleid: MLS306
    return {"accuracy": float((preds == labels).mean()), "f1": f1_score(labels, preds, average="macro")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sst2", choices=list(TEXT_KEYS))
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--revision", default="main")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model, revision=args.revision)
    k1, k2 = TEXT_KEYS[args.task]
    raw = load_dataset("glue", args.task)
    enc = raw.map(lambda b: tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, revision=args.revision, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    targs = TrainingArguments(output_dir=f"out/{args.task}", label_smoothing_factor=0.1,  # ok: MLS309
                              learning_rate=2e-5, per_device_train_batch_size=32, per_device_eval_batch_size=64,
                              num_train_epochs=3, warmup_ratio=0.06, weight_decay=0.01,
                              eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                              metric_for_best_model="accuracy", seed=args.seed, report_to="none")
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"], eval_dataset=enc["validation"],
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics)
    trainer.train()
    print(trainer.evaluate())
    trainer.save_model(f"out/{args.task}/best")


if __name__ == "__main__":
    main()
