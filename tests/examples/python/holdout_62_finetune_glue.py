# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""Fine-tune a BERT-style encoder on a GLUE task with the HF Trainer."""
import argparse

import numpy as np
import torch
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments, set_seed)


class LayerNormStatsCallback(TrainerCallback):
    """Report LayerNorm gain statistics at each logging step."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % args.logging_steps or model is None:
            return
        norms = []
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("LayerNorm.weight"):
                    norms.append(p.norm().item())
                    p.data.mul_(0.98)  # ruleid: MLS302
        if norms and state.is_world_process_zero:
            state.log_history.append({"step": state.global_step, "ln_gain_mean": float(np.mean(norms))})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--out", default="out/mrpc")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    set_seed(a.seed)  # ok: MLS301

    raw = load_dataset("glue", a.task)
    tok = AutoTokenizer.from_pretrained(a.model)
    enc = raw.map(lambda b: tok(b["sentence1"], b["sentence2"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    def compute_metrics(p):
        preds = p.predictions.argmax(-1)
        return {"accuracy": float((preds == p.label_ids).mean())}

    targs = TrainingArguments(
        output_dir=a.out, learning_rate=2e-5, per_device_train_batch_size=32, num_train_epochs=5,
        warmup_ratio=0.06, weight_decay=0.01, evaluation_strategy="epoch", save_strategy="epoch",
        logging_steps=50, load_best_model_at_end=True, metric_for_best_model="accuracy", seed=a.seed,
    )
    trainer = Trainer(
        model=model, args=targs, train_dataset=enc["train"], eval_dataset=enc["validation"],
        tokenizer=tok, data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics,
        callbacks=[LayerNormStatsCallback(), EarlyStoppingCallback(early_stopping_patience=2)],  # ok: MLS307
    )
    trainer.train()
    trainer.save_model(a.out)


if __name__ == "__main__":
    main()
