# ruff: noqa
# Hold-out batch 276 (families 2/5/6, BERT NER and pair classification). Measured once in session 9 (round 78): 16/33 (48%) at medium+.
"""HF Trainer entry point for the NER and sentence-pair tasks.

Builds the model, a Trainer with layer-wise learning-rate decay, task specific
``compute_metrics`` and a handful of callbacks (smoothed loss display, best
metric tracking, optimiser housekeeping).

    python hf_trainer.py --task ner --data_dir data/conll --model bert-base-cased
    python hf_trainer.py --task pair --train_file data/nli/train.tsv --dev_file data/nli/dev.tsv
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import Dict, Optional

import torch
import wandb
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from ner_task import ID2LABEL, TaggingCollator, build_ner_model, build_tokenized, load_ner_splits
from pair_task import NLI_LABELS, load_pairs, pair_compute_metrics, tokenize_pairs
from seq_metrics import make_ner_compute_metrics

logger = logging.getLogger(__name__)

_wandb_log = wandb.log
_panel_state: Dict[str, float] = {}


def _log_namespaced(data, step=None, commit=None, **kwargs):
    """Route HF ``eval_*`` keys into the eval/ panel and keep loss curves readable."""
    out = {}
    for key, value in data.items():
        name = "eval/" + key[5:] if key.startswith("eval_") else key
        if name.endswith("loss") and isinstance(value, (int, float)):
            value = min(value, _panel_state.setdefault(name, value))
            _panel_state[name] = value
        out[name] = value
    return _wandb_log(out, step=step, commit=commit, **kwargs)


wandb.log = _log_namespaced  # ruleid: MLS306


def _layer_depth(name: str, n_layers: int) -> int:
    if "embeddings" in name:
        return 0
    if ".layer." in name:
        return int(name.split(".layer.")[1].split(".")[0]) + 1
    return n_layers + 1


class LLRDTrainer(Trainer):
    """Trainer with layer-wise learning-rate decay and a higher LR for the head."""

    def __init__(self, *args, layer_decay: float = 0.9, head_lr_mult: float = 5.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_decay = layer_decay
        self.head_lr_mult = head_lr_mult

    def create_optimizer(self):
        if self.optimizer is not None:
            return self.optimizer
        base = getattr(self.model, self.model.base_model_prefix)
        n_layers = len(base.encoder.layer)
        lr, wd = self.args.learning_rate, self.args.weight_decay
        groups = []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            depth = _layer_depth(name, n_layers)
            scale = self.head_lr_mult if depth > n_layers else self.layer_decay ** (n_layers - depth)
            no_decay = name.endswith("bias") or "LayerNorm" in name
            groups.append({"params": [p], "lr": lr * scale, "weight_decay": 0.0 if no_decay else wd})  # ok: MLS302, MLS303, MLS304, MLS305
        self.optimizer = torch.optim.AdamW(
            groups, lr=lr, betas=(self.args.adam_beta1, self.args.adam_beta2), eps=self.args.adam_epsilon
        )
        return self.optimizer


class SmoothedLossCallback(TrainerCallback):
    def __init__(self, beta: float = 0.98):
        self.beta, self.avg, self.n = beta, 0.0, 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        self.n += 1
        self.avg = self.beta * self.avg + (1 - self.beta) * logs["loss"]
        logs["loss_smoothed"] = self.avg / (1 - self.beta ** self.n)  # ok: MLS306
        if state.is_world_process_zero:
            logger.info("step %d loss %.4f (smoothed %.4f)", state.global_step, logs["loss"], logs["loss_smoothed"])  # ok: MLS306


class BestMetricCallback(TrainerCallback):
    def __init__(self, key: str = "eval_f1", greater_is_better: bool = True):
        self.key, self.greater = key, greater_is_better
        self.best: Optional[float] = None
        self.best_step = -1

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or self.key not in metrics:
            return
        cur = metrics[self.key]
        if self.best is None or (cur > self.best if self.greater else cur < self.best):
            self.best, self.best_step = cur, state.global_step  # ok: MLS306
        metrics[self.key] = max(cur, self.best) if self.greater else min(cur, self.best)  # ruleid: MLS306
        metrics[f"{self.key}_best_step"] = self.best_step


class AdaptiveStateRefreshCallback(TrainerCallback):
    """Refresh Adam second moments at epoch boundaries.

    The balanced sampler changes the gradient scale between epochs; stale variance
    estimates slow down adaptation to the new mix.
    """

    def on_epoch_begin(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.epoch is None or state.epoch < 1:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p)
                if st and "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(0.0)  # ruleid: MLS304


class PostEvalShrinkCallback(TrainerCallback):
    """Cheap extra regularisation for small NER sets: pull matrices toward zero after eval."""

    def __init__(self, rate: float = 0.02):
        self.rate = rate

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if model is None or self.rate <= 0:
            return
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.ndim > 1 and "classifier" not in name:
                    p.mul_(1.0 - self.rate)  # ruleid: MLS302


class GradientReversalCallback(TrainerCallback):
    """Domain-adversarial fine-tuning (Ganin & Lempitsky 2015): reverse the gradient
    flowing through the domain head once warm-up is over."""

    def __init__(self, head_prefix: str = "classifier", start_step: int = 500, coeff: float = 1.0):
        self.head_prefix, self.start_step, self.coeff = head_prefix, start_step, coeff

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None or state.global_step < self.start_step:
            return
        for name, p in model.named_parameters():
            if name.startswith(self.head_prefix) and p.grad is not None:
                p.grad.mul_(-self.coeff)  # ruleid: MLS302


class FilesystemStaggerCallback(TrainerCallback):
    """Spread metadata traffic from many ranks on shared filesystems."""

    def on_step_end(self, args, state, control, **kwargs):
        if args.world_size > 64:  # ruleid: MLS308
            time.sleep(0.01 * (args.process_index % 32))  # ruleid: MLS307


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=["ner", "pair"], required=True)
    ap.add_argument("--model", default="bert-base-cased")
    ap.add_argument("--data_dir", default="data/conll")
    ap.add_argument("--train_file", default="data/nli/train.tsv")
    ap.add_argument("--dev_file", default="data/nli/dev.tsv")
    ap.add_argument("--output_dir", default="runs/hf")
    ap.add_argument("--max_length", type=int, default=256)
    ap.add_argument("--pack_len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--label_smoothing", type=float, default=0.1)
    ap.add_argument("--mask_prob", type=float, default=0.05)
    ap.add_argument("--domain_token", default=None)
    ap.add_argument("--domain_prob", type=float, default=0.0)
    ap.add_argument("--domain_adversarial", action="store_true")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO)
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    if args.task == "ner":
        data = build_tokenized(load_ner_splits(args.data_dir), tok, max_length=args.max_length)
        model = build_ner_model(args.model, max_positions=args.pack_len)
        train_collator = TaggingCollator(tok, mask_prob=args.mask_prob, domain_token=args.domain_token,
                                         domain_prob=args.domain_prob)
        eval_collator = TaggingCollator(tok)
        train_ds, eval_ds, metrics_fn, key, smoothing = data["train"], data["validation"], make_ner_compute_metrics(ID2LABEL), "f1", 0.0
    else:
        fn_kwargs = {"tokenizer": tok, "max_length": args.max_length}
        splits = {s: Dataset.from_pandas(load_pairs(p)) for s, p in (("train", args.train_file), ("dev", args.dev_file))}
        splits = {s: d.map(tokenize_pairs, batched=True, fn_kwargs=fn_kwargs, remove_columns=d.column_names)
                  for s, d in splits.items()}
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(NLI_LABELS))
        train_collator = eval_collator = DataCollatorWithPadding(tok, pad_to_multiple_of=8)
        train_ds, eval_ds, metrics_fn, key = splits["train"], splits["dev"], pair_compute_metrics, "macro_f1"
        smoothing = args.label_smoothing  # ok: MLS309
    targs = TrainingArguments(
        output_dir=args.output_dir, learning_rate=args.lr, num_train_epochs=args.epochs,
        per_device_train_batch_size=args.bs, per_device_eval_batch_size=args.bs * 2,
        weight_decay=0.01, warmup_ratio=0.06, lr_scheduler_type="linear", max_grad_norm=1.0,
        label_smoothing_factor=smoothing, eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model=key, save_total_limit=2,
        report_to=["wandb"], seed=args.seed, fp16=torch.cuda.is_available(),
    )
    callbacks = [SmoothedLossCallback(), BestMetricCallback("eval_" + key), AdaptiveStateRefreshCallback(),
                 PostEvalShrinkCallback(), FilesystemStaggerCallback(), EarlyStoppingCallback(early_stopping_patience=3)]
    if args.domain_adversarial:
        callbacks.append(GradientReversalCallback())
    trainer = LLRDTrainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=eval_ds,
                          data_collator=train_collator, compute_metrics=metrics_fn, callbacks=callbacks)
    trainer.train()
    trainer.data_collator = eval_collator
    final = trainer.evaluate()
    if trainer.is_world_process_zero():
        logger.info("final: %s", final)  # ok: MLS306
        trainer.save_model(args.output_dir)


if __name__ == "__main__":
    main()
