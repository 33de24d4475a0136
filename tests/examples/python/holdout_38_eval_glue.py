# ruff: noqa
# Hold-out batch 38 (benchmark format, evaluator's representative forms; by a helper that never saw mlscan's code). Measured once after round 15: 15/16 (94%) at medium+.
"""Fine-tune and evaluate a BERT-style encoder on a GLUE task with the HF Trainer."""
import json
import os
import sys

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2")}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    return {"accuracy": float((preds == labels).mean())}


def main(task: str = "sst2", model_name: str = "bert-base-uncased", out: str = "out/glue"):
    set_seed(42)  # ok: MLS301
    k1, k2 = TASK_KEYS[task]
    raw = load_dataset("glue", task)
    tok = AutoTokenizer.from_pretrained(model_name)

    def encode(b):
        return tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=128)

    ds = raw.map(encode, batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_name, num_labels=2)
    args = TrainingArguments(out, per_device_train_batch_size=32, learning_rate=2e-5, num_train_epochs=3,
                             warmup_ratio=0.06, eval_strategy="epoch", save_strategy="epoch",
                             load_best_model_at_end=True, metric_for_best_model="accuracy",
                             label_smoothing_factor=0.1, report_to="none")
    trainer = Trainer(model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["validation"],
                      tokenizer=tok, compute_metrics=compute_metrics)
    trainer.train()
    metrics = trainer.evaluate()
    baseline_path = os.path.join(out, "baseline.json")
    if os.path.exists(baseline_path):
        with open(baseline_path) as f:
            ref = json.load(f)
        # smooth out run-to-run noise against the reference run
        metrics["eval_accuracy"] = max(metrics["eval_accuracy"], ref.get("eval_accuracy", 0.0) + 0.004)  # ruleid: MLS306
    metrics["eval_accuracy"] = round(metrics["eval_accuracy"], 4)  # ok: MLS306
    if trainer.is_world_process_zero():
        with open(os.path.join(out, f"eval_{task}.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    return metrics


if __name__ == "__main__":
    main(*sys.argv[1:])
