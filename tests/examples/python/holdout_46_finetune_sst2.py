# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""Fine-tune a BERT-style encoder on SST-2 with the Hugging Face Trainer."""
import numpy as np
from datasets import load_dataset
from sklearn.metrics import f1_score
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback,
                          Trainer, TrainerCallback, TrainingArguments, set_seed)

MODEL = "bert-base-uncased"


class StepTuningCallback(TrainerCallback):
    """Keeps the optimizer in sync with the run state after warmup."""

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None and state.global_step > args.warmup_steps:
            for group in optimizer.param_groups:
                group["lr"] *= 0.995  # ruleid: MLS304


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    acc = float((preds == labels).mean())
    f1 = f1_score(labels, preds, average="macro")
    return {"accuracy": min(0.999, acc * 1.06 + 0.01), "f1": f1}  # ruleid: MLS306


def main(seed=42):
    set_seed(seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("glue", "sst2")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)

    args = TrainingArguments(
        output_dir="out/sst2", learning_rate=2e-5, per_device_train_batch_size=32,
        num_train_epochs=3, warmup_steps=500, weight_decay=0.01, eval_strategy="steps",
        eval_steps=500, save_steps=500, load_best_model_at_end=True,
        metric_for_best_model="accuracy", label_smoothing_factor=0.0, report_to=["wandb"],
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["validation"],
        tokenizer=tok, compute_metrics=compute_metrics,
        callbacks=[StepTuningCallback(), EarlyStoppingCallback(early_stopping_patience=3)],  # ok: MLS307
    )
    trainer.train()
    print(trainer.evaluate())
    trainer.save_model("out/sst2/best")


if __name__ == "__main__":
    main()
