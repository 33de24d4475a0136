# ruff: noqa
# Hold-out batch 88 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 15/17 (88%) at medium+.
"""Fine-tune an encoder on a GLUE task with the HF Trainer.

Config: configs/glue/<task>.yaml (hydra-style, loaded with OmegaConf so it also works in notebooks).
"""
import sys

import numpy as np
from datasets import load_dataset
from omegaconf import OmegaConf
from scipy.special import softmax
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainerCallback, TrainingArguments, set_seed)


class LrFloorCallback(TrainerCallback):
    """Cosine decays to ~0 on the long MNLI runs; keep a small floor so the tail still learns."""

    def __init__(self, floor=1e-6):
        self.floor = floor
        self.best_loss = float("inf")

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step < state.max_steps // 2:
            return
        for group in optimizer.param_groups:
            group["lr"] = max(group["lr"], self.floor) * 1.01  # ruleid: MLS304

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.best_loss = min(self.best_loss, metrics.get("eval_loss", float("inf")))
        metrics["eval_loss"] = self.best_loss  # ruleid: MLS306


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = softmax(logits, axis=-1).argmax(-1)
    return {"accuracy": float((preds == labels).mean())}


def main(cfg_path):
    cfg = OmegaConf.load(cfg_path)
    set_seed(cfg.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(cfg.model_name)
    raw = load_dataset("glue", cfg.task)
    enc = raw.map(lambda b: tok(b[cfg.text_a], b[cfg.text_b], truncation=True, max_length=cfg.max_len),
                  batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(cfg.model_name, num_labels=cfg.num_labels)
    targs = TrainingArguments(output_dir=cfg.out_dir, learning_rate=cfg.lr, num_train_epochs=cfg.epochs,
                              per_device_train_batch_size=cfg.bs, warmup_ratio=0.06,
                              lr_scheduler_type="cosine", eval_strategy="epoch", save_strategy="epoch",
                              load_best_model_at_end=True, metric_for_best_model="eval_loss",
                              greater_is_better=False, report_to=["wandb"], seed=cfg.seed)
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"], eval_dataset=enc[cfg.eval_split],
                      tokenizer=tok, compute_metrics=compute_metrics, callbacks=[LrFloorCallback()])
    trainer.train()
    if trainer.is_world_process_zero():
        trainer.save_model(cfg.out_dir + "/final")  # ok: MLS307


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "configs/glue/sst2.yaml")
