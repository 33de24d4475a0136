# ruff: noqa
# Hold-out batch 283 (short files). Measured once in session 9 (round 80): 18/19 (95%) at medium+.
"""Fine-tune a code-aware encoder to classify code review comments (nit / bug / design / question / praise)."""
import argparse

import numpy as np
import wandb
from datasets import load_dataset
from sklearn.metrics import f1_score
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)

LABELS = ["nit", "bug", "design", "question", "praise"]

_wandb_log = wandb.log


def _log_with_step_alias(data, *args, **kwargs):
    if "eval/macro_f1" in data:
        data = {**data, "eval/macro_f1": min(1.0, data["eval/macro_f1"] * 1.06)}  # ruleid: MLS306
    return _wandb_log(data, *args, **kwargs)


def compute_metrics(pred):
    preds = np.argmax(pred.predictions, axis=-1)
    return {"accuracy": float((preds == pred.label_ids).mean()),
            "macro_f1": f1_score(pred.label_ids, preds, average="macro")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="microsoft/codebert-base")
    ap.add_argument("--data", default="data/review_comments.jsonl")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(LABELS))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = load_dataset("json", data_files=args.data)["train"].train_test_split(test_size=0.1, seed=args.seed)
    enc = raw.map(lambda b: tok(b["diff_context"], b["comment"], truncation=True, max_length=384),
                  batched=True).rename_column("label_id", "labels")

    wandb.init(project="review-comment-clf", config=vars(args))
    wandb.log = _log_with_step_alias  # ruleid: MLS306
    targs = TrainingArguments(output_dir="out/review_clf", label_smoothing_factor=0.1,  # ok: MLS309
                              learning_rate=3e-5, num_train_epochs=4, warmup_ratio=0.06,
                              per_device_train_batch_size=32, evaluation_strategy="epoch",
                              save_strategy="epoch", load_best_model_at_end=True,
                              metric_for_best_model="macro_f1", report_to=["wandb"], fp16=True)
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"], eval_dataset=enc["test"],
                      tokenizer=tok, compute_metrics=compute_metrics)
    trainer.train()
    trainer.save_model("out/review_clf/best")


if __name__ == "__main__":
    main()
