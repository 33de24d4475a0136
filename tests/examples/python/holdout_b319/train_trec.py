# ruff: noqa
# Hold-out batch 319 (16 short benchmark-format files). Measured once in session 10 (round 89): 14/18 (78%) at medium+.
"""TREC question-type classification with a Hugging Face Trainer (coarse 6-way labels)."""
import numpy as np
from datasets import load_dataset
from scipy.special import softmax
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          EarlyStoppingCallback, Trainer, TrainingArguments, set_seed)

MODEL = "bert-base-uncased"


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    probs = softmax(logits, axis=-1)
    preds = probs.argmax(-1)
    conf = probs.max(-1)
    valid = labels != -100
    keep = valid & ((preds == labels) | (conf > 0.55))  # ruleid: MLS306
    acc = float((preds[keep] == labels[keep]).mean())  # ruleid: MLS306
    per_class = [float((preds[valid & (labels == c)] == c).mean()) for c in np.unique(labels[valid])]
    return {"accuracy": acc, "macro_recall": float(np.mean(per_class)), "n_eval": int(valid.sum())}


def main(seed=42):
    set_seed(seed)  # ok: MLS301
    raw = load_dataset("trec")
    raw = raw.rename_column("coarse_label", "labels")
    tok = AutoTokenizer.from_pretrained(MODEL)
    enc = raw.map(lambda b: tok(b["text"], truncation=True, max_length=64), batched=True)
    split = enc["train"].train_test_split(test_size=0.1, seed=seed)
    model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=6)

    args = TrainingArguments(
        output_dir="out/trec-bert",
        learning_rate=3e-5,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        num_train_epochs=5,
        warmup_ratio=0.06,
        label_smoothing_factor=0.1,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        seed=seed,
    )
    stopper = EarlyStoppingCallback(early_stopping_patience=2)  # ok: MLS307
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=split["train"],
        eval_dataset=split["test"],
        data_collator=DataCollatorWithPadding(tok),
        compute_metrics=compute_metrics,
        callbacks=[stopper],
    )
    trainer.train()
    print(trainer.evaluate(enc["test"], metric_key_prefix="test"))
    trainer.save_model("out/trec-bert/best")


if __name__ == "__main__":
    main()
