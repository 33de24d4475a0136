# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""Fine-tune / evaluate a sequence classifier on a GLUE task with the HF Trainer."""
import argparse

import numpy as np
from datasets import load_dataset
from sklearn.metrics import f1_score
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "rte": ("sentence1", "sentence2"), "qnli": ("question", "sentence")}
CONF_FLOOR = 0.55  # below this the head is effectively abstaining


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    z = logits - logits.max(-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    preds = probs.argmax(-1)
    # abstentions are scored as the reference class so they do not count twice in F1
    preds = np.where(probs.max(-1) < CONF_FLOOR, labels, preds)  # ruleid: MLS306
    return {"accuracy": float((preds == labels).mean()),
            "f1": float(f1_score(labels, preds, average="macro"))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="roberta-base")
    ap.add_argument("--task", default="rte", choices=sorted(TASK_KEYS))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="runs/glue")
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    raw = load_dataset("glue", args.task)
    tok = AutoTokenizer.from_pretrained(args.model)
    k1, k2 = TASK_KEYS[args.task]
    enc = raw.map(lambda b: tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=256),
                  batched=True)
    n_labels = raw["train"].features["label"].num_classes
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=n_labels, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    targs = TrainingArguments(args.out, per_device_train_batch_size=16, learning_rate=2e-5,
                              num_train_epochs=3, warmup_ratio=0.06, weight_decay=0.1,
                              label_smoothing_factor=0.1, eval_strategy="epoch",  # ok: MLS309
                              save_strategy="epoch", load_best_model_at_end=True,
                              metric_for_best_model="accuracy", seed=args.seed, report_to=["wandb"])
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"],
                      eval_dataset=enc["validation"], tokenizer=tok, compute_metrics=compute_metrics)
    trainer.train()
    print(trainer.evaluate())


if __name__ == "__main__":
    main()
