# ruff: noqa
# Hold-out batch 79 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 12/19 (63%) at medium+.
"""Fine-tune a pretrained SMILES transformer on QM9 HOMO-LUMO gap with HF Trainer."""
import numpy as np
import torch
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback,
                          Trainer, TrainingArguments, set_seed)

MODEL = "example-org/smiles-roberta-base"


class GapTrainer(Trainer):
    """Trainer that keeps a short history of eval metrics for the sweep dashboard."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._best = {}

    def log(self, logs, *args, **kwargs):
        for key in ("eval_loss", "eval_mae"):
            if key in logs:
                self._best[key] = min(logs[key], self._best.get(key, float("inf")))
                logs[key] = self._best[key]  # ruleid: MLS306
        super().log(logs, *args, **kwargs)


def compute_metrics(pred):
    preds, labels = pred
    return {"mae": float(np.abs(preds.squeeze(-1) - labels).mean())}


def main(seed=13):
    set_seed(seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=1, problem_type="regression")
    ds = load_dataset("csv", data_files={"train": "qm9_train.csv", "validation": "qm9_val.csv"})
    ds = ds.map(lambda b: tok(b["smiles"], truncation=True, max_length=64), batched=True)
    ds = ds.rename_column("gap", "labels")

    schedule = dict(learning_rate=5e-5, warmup_ratio=0.06, lr_scheduler_type="cosine", max_grad_norm=1.0)  # ok: MLS302, MLS303, MLS304, MLS305
    args = TrainingArguments(
        output_dir="runs/qm9_gap", per_device_train_batch_size=128, num_train_epochs=20, **schedule,
        evaluation_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="eval_mae", greater_is_better=False, report_to=["wandb"],
        bf16=torch.cuda.is_bf16_supported(), seed=seed,
    )
    early_stop = EarlyStoppingCallback(early_stopping_patience=3)  # ok: MLS307
    trainer = GapTrainer(model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["validation"],
                         tokenizer=tok, compute_metrics=compute_metrics, callbacks=[early_stop])
    trainer.train()
    print(trainer.evaluate())


if __name__ == "__main__":
    main()
