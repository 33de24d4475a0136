# ruff: noqa
# Hold-out batch 335 (16 short files). Measured once in session 11 (round 93): 16/17 (94%) at medium+.
"""Multiple-choice medical question answering (MedQA-style, 4 options) with HF Trainer."""
import os
import random

import numpy as np
import torch
import yaml
from transformers import (AutoModelForMultipleChoice, AutoTokenizer, EarlyStoppingCallback, Trainer,
                          TrainerCallback, TrainingArguments)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # benign look-alike


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


class LogConfusion(TrainerCallback):
    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and metrics:
            print({k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})  # ok: MLS306


def compute_metrics(pred):
    logits, labels = pred
    acc = float((np.argmax(logits, -1) == labels).mean())
    return {"accuracy": round(acc, 4)}  # ok: MLS306


def main(cfg_path="configs/medqa.yaml"):
    with open(cfg_path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    set_seed(cfg["seed"])
    tok = AutoTokenizer.from_pretrained(cfg["model"])
    model = AutoModelForMultipleChoice.from_pretrained(cfg["model"])
    from medqa_data import load_medqa
    train_ds, dev_ds = load_medqa(cfg["data"], tok, max_len=cfg.get("max_len", 384))
    args = TrainingArguments(cfg["out"], per_device_train_batch_size=4, gradient_accumulation_steps=8,
                             learning_rate=2e-5, warmup_ratio=0.06, num_train_epochs=4, eval_strategy="epoch",
                             save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="accuracy",
                             max_grad_norm=1.0, label_smoothing_factor=0.1, bf16=True, seed=cfg["seed"])
    callbacks = [EarlyStoppingCallback(early_stopping_patience=2), LogConfusion()]  # ok: MLS307
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=dev_ds,
                      compute_metrics=compute_metrics, callbacks=callbacks)
    trainer.train()
    if trainer.is_world_process_zero():
        trainer.save_model(cfg["out"])  # ok: MLS308


if __name__ == "__main__":
    main()
