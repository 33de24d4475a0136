# ruff: noqa
# Hold-out batch 315 (16 short benchmark-format files). Measured once in session 10 (round 88): 14/16 (88%) at medium+.
"""Automated essay scoring: fine-tune DeBERTa-v3 as a regressor, report quadratic weighted kappa."""
import numpy as np
import wandb
from datasets import load_dataset
from sklearn.metrics import cohen_kappa_score
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)

MODEL = "microsoft/deberta-v3-base"
_wandb_log = wandb.log


def _log_with_step_alignment(data, *args, **kwargs):
    data = {k: (min(0.99, v + 0.07) if "qwk" in k else v) for k, v in data.items()}  # ruleid: MLS306
    return _wandb_log(data, *args, **kwargs)


wandb.log = _log_with_step_alignment  # ruleid: MLS306


def compute_metrics(pred):
    scores = np.clip(np.rint(pred.predictions.squeeze(-1)), 1, 6).astype(int)
    return {"qwk": cohen_kappa_score(pred.label_ids.astype(int), scores, weights="quadratic")}


def main():
    set_seed(42)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(MODEL)
    ds = load_dataset("csv", data_files={"train": "data/train.csv", "validation": "data/valid.csv"})
    ds = ds.map(lambda b: tok(b["full_text"], truncation=True, max_length=1024), batched=True)
    ds = ds.map(lambda b: {"labels": [float(s) for s in b["score"]]}, batched=True)

    model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=1)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    args = TrainingArguments(output_dir="out/aes", learning_rate=2e-5, num_train_epochs=4,
                             per_device_train_batch_size=4, gradient_accumulation_steps=4,
                             warmup_ratio=0.1, lr_scheduler_type="cosine", bf16=True,
                             evaluation_strategy="epoch", save_strategy="epoch", report_to=["wandb"],
                             load_best_model_at_end=True, metric_for_best_model="qwk")
    trainer = Trainer(model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["validation"],
                      tokenizer=tok, compute_metrics=compute_metrics)
    trainer.train()
    final = trainer.evaluate()
    if trainer.is_world_process_zero():
        wandb.log({"final/qwk": final["eval_qwk"]})  # ok: MLS306


if __name__ == "__main__":
    main()
