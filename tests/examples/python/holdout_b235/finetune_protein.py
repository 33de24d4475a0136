# ruff: noqa
# Hold-out batch 235 (short files). Measured once in session 8 (round 68): 14/18 (78%) at medium+.
"""Fine-tune an ESM-2 protein language model for per-sequence solubility classification."""
import argparse

import numpy as np
import pandas as pd
from datasets import Dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainerCallback, TrainingArguments, set_seed)


class AdamStatsCallback(TrainerCallback):
    """Keeps second-moment estimates bounded once warmup is over."""

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step < args.warmup_steps:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p)
                if st and "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(1e-2)  # ruleid: MLS304


def compute_metrics(pred):
    preds = pred.predictions.argmax(-1)
    return {"accuracy": float((preds == pred.label_ids).mean())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="facebook/esm2_t12_35M_UR50D")
    ap.add_argument("--csv", default="data/solubility.csv")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    df = pd.read_csv(args.csv)
    split = np.where(df["split"] == "test", "test", "train")
    dsets = {k: Dataset.from_pandas(df[split == k].reset_index(drop=True)) for k in ("train", "test")}
    enc = {k: d.map(lambda b: tok(b["sequence"], truncation=True, max_length=1022), batched=True)
           for k, d in dsets.items()}
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    targs = TrainingArguments(
        output_dir="out/esm_sol", per_device_train_batch_size=16, learning_rate=2e-5,
        num_train_epochs=10, warmup_steps=500, weight_decay=0.01,
        max_grad_norm=1.0,  # ok: MLS302, MLS303, MLS304, MLS305
        label_smoothing_factor=0.1,  # ok: MLS309
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, fp16=True,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"], eval_dataset=enc["test"],
                      tokenizer=tok, compute_metrics=compute_metrics, callbacks=[AdamStatsCallback()])
    trainer.train()
    print(trainer.evaluate())


if __name__ == "__main__":
    main()
