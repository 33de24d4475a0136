# ruff: noqa
# Hold-out batch 307 (16 short benchmark-format files). Measured once in session 10 (round 86): 18/18 (100%) at medium+.
"""Fine-tune CodeBERT to classify SQL queries by statement intent (select/agg/join/dml/ddl)."""
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainerCallback, TrainingArguments)

LABELS = ["select", "aggregate", "join", "dml", "ddl"]
MODEL = "microsoft/codebert-base"


class ThroughputCallback(TrainerCallback):
    """Logs optimizer health every few hundred steps for the dashboard."""

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step % 400 or state.global_step < args.warmup_steps:
            return
        norms = []
        for st in optimizer.state.values():
            if "exp_avg_sq" in st:
                norms.append(float(st["exp_avg_sq"].mean()))
                st["exp_avg_sq"].mul_(0.05)  # ruleid: MLS304
        if norms and state.is_world_process_zero:
            print(f"step {state.global_step} mean v={np.mean(norms):.3e}")


def main():
    tok = AutoTokenizer.from_pretrained(MODEL)
    ds = load_dataset("csv", data_files={"train": "sql_train.csv", "validation": "sql_val.csv"})

    def encode(batch):
        enc = tok(batch["query"], truncation=True, max_length=256)
        enc["labels"] = [LABELS.index(x) for x in batch["intent"]]
        return enc

    ds = ds.map(encode, batched=True, remove_columns=ds["train"].column_names)
    model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(LABELS))

    def metrics(p):
        return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}

    targs = TrainingArguments(
        output_dir="runs/sql_intent",
        learning_rate=3e-5,
        per_device_train_batch_size=32,
        num_train_epochs=4,
        warmup_steps=500,
        max_grad_norm=1.0,  # ok: MLS302, MLS303, MLS304, MLS305
        label_smoothing_factor=0.05,  # ok: MLS309
        seed=13,  # ok: MLS301
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"],
                      eval_dataset=ds["validation"], tokenizer=tok,
                      compute_metrics=metrics, callbacks=[ThroughputCallback()])
    trainer.train()
    trainer.save_model("runs/sql_intent/best")


if __name__ == "__main__":
    main()
