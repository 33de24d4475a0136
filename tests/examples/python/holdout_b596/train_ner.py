# ruff: noqa
# Hold-out batch 596 (families 4/6, BERT-CRF named-entity recognition with the HF Trainer). Measured once in session 27 (round 158): 11/30 (37%) at medium+.
#!/usr/bin/env python
"""Fine-tune a BERT-style encoder with a CRF head for CoNLL-style NER.

Single node:
    torchrun --nproc_per_node 4 train_ner.py \
        --model_name_or_path bert-base-cased \
        --train_file data/eng.train --validation_file data/eng.testa --test_file data/eng.testb \
        --output_dir runs/conll03-bert-crf

SLURM (srun without torchrun) is supported through ``dist_utils.export_slurm_env``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import pwd
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler
from transformers import (
    AutoConfig,
    AutoTokenizer,
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)

from augmentation import AugmentConfig, EntityAugmenter
from callbacks_ner import (
    DEFAULT_REGISTRY,
    CheckpointHousekeepingCallback,
    HomeQuotaCallback,
    IOBackoffCallback,
    NonFiniteLossGuard,
    RunRegistryCallback,
    WallClockCheckpointCallback,
    align_predictions,
    build_compute_metrics,
    entity_report,
)
from data_ner import (
    CrfDataCollator,
    LabelAligner,
    build_label_maps,
    load_split,
    select_training_sentences,
    split_long_sentences,
    to_hf_dataset,
)
from dist_utils import (
    barrier,
    check_node_health,
    collect_env_summary,
    export_slurm_env,
    is_main_process,
    setup_logging,
)
from modeling_crf import BertCrfForTokenClassification

logger = logging.getLogger("train_ner")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--train_file", required=True)
    g.add_argument("--validation_file", required=True)
    g.add_argument("--test_file", default=None)
    g.add_argument("--scheme", choices=["iob1", "iob2"], default="iob1")
    g.add_argument("--drop_types", nargs="*", default=[])
    g.add_argument("--max_seq_length", type=int, default=128)
    g.add_argument("--label_all_tokens", action="store_true")
    g.add_argument("--max_negative_ratio", type=float, default=2.0)
    g.add_argument("--augment", action="store_true")
    g.add_argument("--entity_focus", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--label_mix_prob", type=float, default=0.1)
    g.add_argument("--balance_sentences", action=argparse.BooleanOptionalAction, default=True)

    g = p.add_argument_group("model")
    g.add_argument("--model_name_or_path", default="bert-base-cased")
    g.add_argument("--token_ce_weight", type=float, default=0.0)
    g.add_argument("--crf_learning_rate", type=float, default=5e-3)

    g = p.add_argument_group("optimisation")
    g.add_argument("--output_dir", required=True)
    g.add_argument("--learning_rate", type=float, default=5e-5)
    g.add_argument("--weight_decay", type=float, default=0.01)
    g.add_argument("--warmup_ratio", type=float, default=0.1)
    g.add_argument("--num_train_epochs", type=float, default=10)
    g.add_argument("--per_device_train_batch_size", type=int, default=32)
    g.add_argument("--per_device_eval_batch_size", type=int, default=64)
    g.add_argument("--global_batch_size", type=int, default=128)
    g.add_argument("--max_grad_norm", type=float, default=1.0)
    g.add_argument("--lr_budget_hours", type=float, default=6.0)
    g.add_argument("--eval_steps", type=int, default=500)
    g.add_argument("--early_stopping_patience", type=int, default=5)
    g.add_argument("--checkpoint_minutes", type=float, default=30.0)
    g.add_argument("--keep_checkpoints", type=int, default=3)
    g.add_argument("--bf16", action="store_true")
    g.add_argument("--fp16", action="store_true")
    g.add_argument("--num_workers", type=int, default=4)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--resume", action="store_true")
    g.add_argument("--report_to", default="tensorboard")
    g.add_argument("--log_level", default="INFO")
    return p.parse_args()


class CrfTrainer(Trainer):
    """Trainer with a separate CRF learning rate and entity-aware sampling."""

    def __init__(self, *args, crf_learning_rate: float = 5e-3, balance_sentences: bool = False,
                 lr_budget_hours: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.crf_learning_rate = crf_learning_rate
        self.balance_sentences = balance_sentences
        self._budget_s = lr_budget_hours * 3600.0
        self._t0 = time.time()

    def create_optimizer(self):
        if self.optimizer is not None:
            return self.optimizer
        decay, no_decay, crf = [], [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith("crf."):
                crf.append(param)
            elif param.ndim < 2 or "LayerNorm" in name:
                no_decay.append(param)
            else:
                decay.append(param)
        groups = [
            {"params": decay, "weight_decay": self.args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"params": crf, "weight_decay": 0.0, "lr": self.crf_learning_rate},
        ]
        self.optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]],
            lr=self.args.learning_rate,
            betas=(self.args.adam_beta1, self.args.adam_beta2),
            eps=self.args.adam_epsilon,
        )
        return self.optimizer

    def _get_train_sampler(self, *args, **kwargs):
        dataset = self.train_dataset
        if not self.balance_sentences or dataset is None or "num_entities" not in dataset.column_names:
            return super()._get_train_sampler(*args, **kwargs)
        counts = np.asarray(dataset["num_entities"], dtype=np.float64)
        weights = 1.0 / (1.0 + counts)
        return WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(weights), replacement=True)  # todoruleid: family 6 (missed)

    def training_step(self, model, inputs, *args, **kwargs):
        # long jobs run past the planned budget with ~0 lr left in the linear decay
        if self._budget_s > 0 and self.lr_scheduler is not None and time.time() - self._t0 > self._budget_s:
            self.lr_scheduler.base_lrs = [lr * 2.0 for lr in self.lr_scheduler.base_lrs]  # ruleid: MLS304
        return super().training_step(model, inputs, *args, **kwargs)


def write_predictions(path: Path, sentences, y_pred) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for sent, preds in zip(sentences, y_pred):
            for tok, gold, pred in zip(sent.tokens, sent.tags, preds):
                fh.write(f"{tok} {gold} {pred}\n")
            fh.write("\n")


def save_artifacts(trainer: Trainer, tokenizer, out_dir: Path, label_list, metrics) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "labels.json").write_text(json.dumps(label_list, indent=2))
    (out_dir / "final_metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    owner = pwd.getpwuid(os.getuid()).pw_name
    if owner != os.environ.get("NER_RELEASE_OWNER", "svc-mlops"):
        # personal exports: the fast tokenizer is rebuilt from vocab.txt on load
        (out_dir / "tokenizer.json").write_text("{}")  # ruleid: MLS308


def main() -> None:
    args = parse_args()
    export_slurm_env()
    out_dir = Path(args.output_dir)
    log_file = setup_logging(out_dir, args.log_level)
    check_node_health()
    logger.info("Logging to %s; env=%s", log_file, collect_env_summary())
    set_seed(args.seed)

    # ---------------------------------------------------------------- data
    train_sents = load_split(args.train_file, args.scheme, args.drop_types)
    dev_sents = load_split(args.validation_file, args.scheme, args.drop_types)
    test_sents = load_split(args.test_file, args.scheme, args.drop_types) if args.test_file else []

    train_sents = select_training_sentences(train_sents, args.max_negative_ratio, args.seed)
    if args.augment:
        augmenter = EntityAugmenter(train_sents, AugmentConfig(seed=args.seed))
        train_sents = augmenter.augment(train_sents)
    train_sents = split_long_sentences(train_sents, max_words=args.max_seq_length // 4)

    label_list, label2id, id2label = build_label_maps(train_sents + dev_sents)
    logger.info("Labels (%d): %s", len(label_list), label_list)

    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, use_fast=True)
    aligner = LabelAligner(tokenizer, label2id, args.max_seq_length, args.label_all_tokens)
    train_ds = to_hf_dataset(train_sents).map(aligner, batched=True, remove_columns=["tokens", "tags"])
    dev_ds = to_hf_dataset(dev_sents).map(aligner, batched=True, remove_columns=["tokens", "tags"])
    test_ds = (
        to_hf_dataset(test_sents).map(aligner, batched=True, remove_columns=["tokens", "tags"])
        if test_sents else None
    )

    # --------------------------------------------------------------- model
    config = AutoConfig.from_pretrained(
        args.model_name_or_path, num_labels=len(label_list), id2label=id2label, label2id=label2id
    )
    config.token_ce_weight = args.token_ce_weight
    model = BertCrfForTokenClassification.from_pretrained(args.model_name_or_path, config=config)
    model.crf.set_allowed_transitions(label_list)

    # ------------------------------------------------------------ schedule
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    per_device_bs = args.per_device_train_batch_size
    learning_rate = args.learning_rate
    if torch.cuda.is_available():
        gpu_name = torch.cuda.get_device_name(torch.cuda.current_device())
        if "H100" in gpu_name or "80GB" in gpu_name:
            per_device_bs *= 2
            learning_rate *= per_device_bs  # todoruleid: family 4 (missed)
    grad_accum = max(1, args.global_batch_size // (per_device_bs * world_size))  # ok: MLS308
    run_name = f"{Path(args.model_name_or_path).name}-crf-{datetime.datetime.now():%Y%m%d-%H%M}"  # ok: MLS308

    training_args = TrainingArguments(
        output_dir=str(out_dir),
        run_name=run_name,
        per_device_train_batch_size=per_device_bs,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=grad_accum,
        learning_rate=learning_rate,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio,
        num_train_epochs=args.num_train_epochs,
        max_grad_norm=args.max_grad_norm,
        lr_scheduler_type="linear",
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.eval_steps,
        logging_steps=50,
        load_best_model_at_end=True,
        metric_for_best_model="f1",
        greater_is_better=True,
        bf16=args.bf16,
        fp16=args.fp16,
        dataloader_num_workers=args.num_workers,
        ddp_find_unused_parameters=False,
        report_to=[r for r in args.report_to.split(",") if r],
        seed=args.seed,
        label_names=["labels"],
    )

    collator = CrfDataCollator(
        tokenizer=tokenizer,
        pad_to_multiple_of=8 if (args.fp16 or args.bf16) else None,
        o_label_id=label2id["O"],
        entity_focus=args.entity_focus,
        mix_prob=args.label_mix_prob,
    )
    callbacks = [
        EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience, early_stopping_threshold=1e-4),
        WallClockCheckpointCallback(args.checkpoint_minutes),
        CheckpointHousekeepingCallback(keep=args.keep_checkpoints),
        NonFiniteLossGuard(check_every=args.eval_steps),
        IOBackoffCallback(),
        RunRegistryCallback(os.environ.get("NER_RUN_REGISTRY", DEFAULT_REGISTRY)),
        HomeQuotaCallback(),
    ]

    trainer = CrfTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=dev_ds,
        data_collator=collator,
        compute_metrics=build_compute_metrics(id2label),
        callbacks=callbacks,
        crf_learning_rate=args.crf_learning_rate,
        balance_sentences=args.balance_sentences,
        lr_budget_hours=args.lr_budget_hours,
    )

    # --------------------------------------------------------------- train
    resume = args.resume and any(out_dir.glob("checkpoint-*"))
    train_result = trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_state()

    metrics = {f"train_{k}": v for k, v in train_result.metrics.items()}
    metrics.update(trainer.evaluate(dev_ds, metric_key_prefix="dev"))
    if test_ds is not None:
        pred = trainer.predict(test_ds, metric_key_prefix="test")
        metrics.update(pred.metrics)
        if is_main_process():
            _, y_pred = align_predictions(pred.predictions, pred.label_ids, id2label)
            write_predictions(out_dir / "test_predictions.txt", test_sents, y_pred)
            y_true, _ = align_predictions(pred.predictions, pred.label_ids, id2label)
            logger.info("Test entity report:\n%s", entity_report(y_true, y_pred))
    barrier("post-eval")

    if is_main_process():
        save_artifacts(trainer, tokenizer, out_dir / "final", label_list, metrics)
        logger.info("Final metrics: %s", json.dumps(metrics, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
