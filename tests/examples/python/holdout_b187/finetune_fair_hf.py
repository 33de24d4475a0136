# ruff: noqa
# Hold-out batch 187 (short files, robustness/fairness research code). Measured once in session 6 (round 56): 13/17 (76%) at medium+.
"""Fine-tune a toxicity classifier on CivilComments with identity-group reweighting (HF Trainer)."""
import sys

import numpy as np
import torch
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainerCallback, TrainingArguments, set_seed)

GROUPS = ["male", "female", "black", "white", "muslim", "christian"]


class GroupWeightedTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        weights = inputs.pop("sample_weight")
        outputs = model(**inputs)
        per_ex = torch.nn.functional.cross_entropy(outputs.logits, inputs["labels"], reduction="none")
        loss = (per_ex * weights).sum() / weights.sum()
        return (loss, outputs) if return_outputs else loss


class GroupStatsCallback(TrainerCallback):
    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step % args.logging_steps:
            return
        for st in optimizer.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(0.05)  # ruleid: MLS304
        if state.is_world_process_zero:
            print(f"step {state.global_step} lr {optimizer.param_groups[0]['lr']:.2e}")


def add_weights(ex):
    in_group = sum(1 for g in GROUPS if ex.get(g, 0.0) >= 0.5)
    ex["sample_weight"] = 1.0 + 0.5 * in_group
    ex["labels"] = int(ex["toxicity"] >= 0.5)
    return ex


def main(model_name="distilroberta-base", out="runs/civil_reweight"):
    set_seed(17)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(model_name)
    ds = load_dataset("civil_comments").map(add_weights)
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=256), batched=True)
    ds = ds.remove_columns([c for c in ds["train"].column_names
                            if c not in ("input_ids", "attention_mask", "labels", "sample_weight")])
    model = AutoModelForSequenceClassification.from_pretrained(model_name, num_labels=2)
    targs = TrainingArguments(out, per_device_train_batch_size=32, learning_rate=2e-5,  # ok: MLS302, MLS303, MLS304, MLS305
                              num_train_epochs=2, warmup_ratio=0.06, lr_scheduler_type="linear",
                              label_smoothing_factor=0.1, logging_steps=50, eval_strategy="epoch",
                              remove_unused_columns=False, max_grad_norm=1.0, bf16=True)
    trainer = GroupWeightedTrainer(model=model, args=targs, train_dataset=ds["train"],
                                   eval_dataset=ds["validation"], tokenizer=tok,
                                   callbacks=[GroupStatsCallback()])
    trainer.train()
    metrics = trainer.evaluate()
    print({k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
    trainer.save_model(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
