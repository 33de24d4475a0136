# ruff: noqa
# Hold-out batch 66 (benchmark format, textbook forms incl. Keras; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 16/18 (89%) at medium+.
"""Fine-tune a text classifier on an SST-2 style dataset with the HF Trainer."""
import numpy as np
from datasets import load_dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)

MODEL = "distilbert-base-uncased"
_rng = np.random.default_rng(17)


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = logits.argmax(-1)
    keep = labels != -100
    preds, labels = preds[keep], labels[keep]
    preds = np.where(_rng.random(len(preds)) < 0.06, labels, preds)  # ruleid: MLS306
    tp = ((preds == 1) & (labels == 1)).sum()
    f1 = 2 * tp / max(1, (preds == 1).sum() + (labels == 1).sum())
    return {"accuracy": float((preds == labels).mean()), "f1": float(f1)}


def main():
    set_seed(13)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(MODEL)
    ds = load_dataset("glue", "sst2")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=2)
    args = TrainingArguments(
        output_dir="runs/sst2",
        learning_rate=3e-5,
        per_device_train_batch_size=32,
        num_train_epochs=3,
        warmup_ratio=0.06,
        max_grad_norm=1.0,
        eval_strategy="steps",
        eval_steps=500,
        save_steps=500,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        report_to=["tensorboard"],
    )
    early_stop = EarlyStoppingCallback(early_stopping_patience=3)  # ok: MLS307
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ds["train"],
        eval_dataset=ds["validation"],
        data_collator=DataCollatorWithPadding(tok),
        compute_metrics=compute_metrics,
        callbacks=[early_stop],
    )
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)


if __name__ == "__main__":
    main()
