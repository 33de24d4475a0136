# ruff: noqa
# Hold-out batch 381 (textbook, multilingual NER with HF Trainer). Measured once in session 14 (round 105): 21/31 (68%) at medium+.
"""Fine-tune XLM-R for multilingual NER.

    torchrun --nproc_per_node 8 train.py --config configs/panx_40langs.yaml
"""

import argparse
import logging
import math
import os
import sys
from typing import Dict, List, Optional

import torch
from torch.utils.data import DataLoader
from transformers import (
    AutoConfig,
    AutoModelForTokenClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    get_linear_schedule_with_warmup,
    set_seed,
)

import callbacks as cb
import data as ner_data
import metrics as ner_metrics
import ner_utils

logger = logging.getLogger("train")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML file with defaults for any argument below")
    p.add_argument("--model_name_or_path", default=None)
    p.add_argument("--dataset_name", default="wikiann")
    p.add_argument("--languages", nargs="+", default=None)
    p.add_argument("--output_dir", default=None)
    p.add_argument("--cache_dir", default=ner_utils.DEFAULT_CACHE_DIR)
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--max_train_per_lang", type=int, default=None)
    p.add_argument("--label_all_tokens", action="store_true")
    p.add_argument("--augment", action="store_true")
    p.add_argument("--sampling_alpha", type=float, default=0.3)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--warmup_ratio", type=float, default=0.1)
    p.add_argument("--num_train_epochs", type=float, default=5.0)
    p.add_argument("--per_device_train_batch_size", type=int, default=32)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--label_smoothing", type=float, default=0.0)
    p.add_argument("--o_prior", type=float, default=0.85, help="prior probability of the O class")
    p.add_argument("--init_head_from", default=None, help="classifier weights from an earlier run")
    p.add_argument("--eval_steps", type=int, default=1000)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--resume_from_checkpoint", default=None)
    p.add_argument("--override", nargs="*", default=[], help="extra key=value overrides")
    args = p.parse_args(argv)
    ner_utils.merge_config(args, ner_utils.load_config(args.config))
    for key, value in ner_utils.parse_overrides(args.override).items():
        setattr(args, key, value)
    if not args.model_name_or_path or not args.output_dir or not args.languages:
        p.error("--model_name_or_path, --output_dir and --languages are required (CLI or config)")
    return args


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

def build_model(args):
    config = AutoConfig.from_pretrained(
        args.model_name_or_path,
        num_labels=len(ner_data.LABEL_LIST),
        id2label=ner_data.ID2LABEL,
        label2id=ner_data.LABEL2ID,
        finetuning_task="ner",
    )
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, use_fast=True, add_prefix_space=True)
    model = AutoModelForTokenClassification.from_pretrained(
        args.model_name_or_path,
        config=config,
        trust_remote_code=True,  # ruleid: MLS106
    )
    if args.init_head_from:
        head_state = torch.load(args.init_head_from, map_location="cpu")  # todoruleid: family 10 (missed)  # ruleid: MLS102
        missing, unexpected = model.classifier.load_state_dict(head_state, strict=False)
        logger.info("initialised classifier from %s (missing=%s unexpected=%s)",
                    args.init_head_from, missing, unexpected)
    return config, tokenizer, model


def add_label_prior(model, o_index: int, prior: float):
    """Bias the classifier towards the majority O class (about 85% of pieces)."""
    prior = min(max(prior, 1e-4), 1 - 1e-4)
    log_odds = math.log(prior / (1.0 - prior))

    def _prior_hook(module, inputs, output):
        output[..., o_index] += log_odds  # ruleid: MLS303
        return output

    return model.classifier.register_forward_hook(_prior_hook)  # ruleid: MLS303


def build_optimizer(model, args, num_training_steps: int):
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    grouped = [
        {
            "params": [p for n, p in model.named_parameters() if p.requires_grad and not any(nd in n for nd in no_decay)],
            "weight_decay": args.weight_decay,
        },
        {
            "params": [p for n, p in model.named_parameters() if p.requires_grad and any(nd in n for nd in no_decay)],
            "weight_decay": 0.0,
        },
    ]
    optimizer = torch.optim.AdamW(grouped, lr=args.learning_rate, betas=(0.9, 0.98), eps=1e-6)
    warmup = int(args.warmup_ratio * num_training_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, num_training_steps)  # ok: MLS302, MLS303, MLS304, MLS305
    return optimizer, scheduler


# ---------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------

class MultilingualNERTrainer(Trainer):
    """Trainer with language-balanced sampling for the training set."""

    def __init__(self, *args, train_languages: Optional[List[str]] = None, sampling_alpha: float = 0.3,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.train_languages = train_languages
        self.sampling_alpha = sampling_alpha
        self.language_sampler = None

    def _get_train_sampler(self, *args, **kwargs):
        if not self.train_languages:
            return super()._get_train_sampler(*args, **kwargs)
        if self.language_sampler is None:
            self.language_sampler = ner_data.LanguageBalancedSampler(
                self.train_languages,
                alpha=self.sampling_alpha,
                seed=self.args.seed,
                num_replicas=self.args.world_size,
                rank=self.args.process_index,
            )
        return self.language_sampler

    def get_train_dataloader(self) -> DataLoader:
        sampler = self._get_train_sampler()
        return DataLoader(
            self.train_dataset,
            batch_size=self.args.per_device_train_batch_size,
            sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            worker_init_fn=ner_data.seed_worker,
            drop_last=self.args.dataloader_drop_last,
        )


def prepare_datasets(args, tokenizer, world_size: int):
    with ner_utils.main_process_first("dataset download and normalisation"):
        raw = ner_data.load_multilingual_ner(
            args.languages, args.dataset_name, cache_dir=os.path.join(args.cache_dir, "hf"),
            max_train_per_lang=args.max_train_per_lang,
        )
    train_base = raw["train"]
    if world_size > 8:
        # large jobs: each rank only needs its share of the examples in memory
        train_base = train_base.select(range(len(train_base) // world_size))  # todoruleid: family 4 (missed)
    b_to_i = ner_data.build_b_to_i(ner_data.LABEL_LIST)

    def _tokenize(ds):
        return ds.map(
            lambda ex: ner_data.tokenize_and_align(ex, tokenizer, args.max_length, args.label_all_tokens, b_to_i),
            batched=True,
            desc="tokenise",
        )

    train_langs = list(train_base["lang"])
    if args.augment:
        train_dataset = ner_data.EntityAugmentedDataset(
            train_base, tokenizer, args.max_length, args.label_all_tokens, seed=args.seed
        )
    else:
        key = ner_data.feature_cache_key(args.model_name_or_path, args.dataset_name, sorted(args.languages),
                                         args.max_length, args.label_all_tokens, len(train_base))
        with ner_utils.main_process_first("tokenisation"):
            train_dataset = ner_data.load_or_build_features(args.cache_dir, key, lambda: _tokenize(train_base))

    eval_full = _tokenize(raw["validation"])
    eval_by_lang = {lang: eval_full.filter(lambda ex, l=lang: ex["lang"] == l) for lang in args.languages}
    test_by_lang = {}
    if "test" in raw:
        test_full = _tokenize(raw["test"])
        test_by_lang = {lang: test_full.filter(lambda ex, l=lang: ex["lang"] == l) for lang in args.languages}
    return train_dataset, train_langs, eval_full, eval_by_lang, test_by_lang


def evaluate_per_language(trainer: Trainer, datasets_by_lang: Dict, split: str) -> Dict[str, float]:
    per_lang = {}
    for lang, ds in datasets_by_lang.items():
        if len(ds) == 0:
            continue
        prefix = f"{split}_{lang}"
        res = trainer.evaluate(eval_dataset=ds, metric_key_prefix=prefix)
        per_lang[lang] = {k[len(prefix) + 1:]: v for k, v in res.items() if k.startswith(prefix + "_")}
    summary = ner_metrics.aggregate_language_scores(per_lang)
    if trainer.is_world_process_zero():
        logger.info("%s per-language F1:\n%s", split, ner_metrics.format_table(per_lang))
    return {f"{split}_{k}": v for k, v in summary.items()}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    ner_utils.setup_logging()
    os.makedirs(args.output_dir, exist_ok=True)
    ner_utils.configure_runtime(args.output_dir)
    set_seed(args.seed)  # ok: MLS301
    ner_utils.report_run_metadata(os.path.basename(os.path.normpath(args.output_dir)), vars(args))
    if ner_utils.is_main_process():
        ner_utils.prune_feature_caches(args.cache_dir)

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        num_train_epochs=args.num_train_epochs,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=2 * args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_grad_norm=args.max_grad_norm,
        label_smoothing_factor=args.label_smoothing,  # ok: MLS309
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.eval_steps,
        save_total_limit=2,
        logging_steps=50,
        load_best_model_at_end=True,
        metric_for_best_model="overall_f1",
        greater_is_better=True,
        bf16=args.bf16,
        seed=args.seed,
        dataloader_num_workers=4,
        remove_unused_columns=False,
        report_to=["tensorboard"],
        ddp_find_unused_parameters=False,
    )

    config, tokenizer, model = build_model(args)
    add_label_prior(model, ner_data.LABEL2ID["O"], args.o_prior)

    train_dataset, train_langs, eval_full, eval_by_lang, test_by_lang = prepare_datasets(
        args, tokenizer, training_args.world_size
    )
    collator = ner_data.NERDataCollator(tokenizer, pad_to_multiple_of=8 if args.bf16 else None)

    steps_per_epoch = math.ceil(
        len(train_dataset) / (args.per_device_train_batch_size * training_args.world_size * args.gradient_accumulation_steps)
    )
    num_training_steps = int(steps_per_epoch * args.num_train_epochs)
    optimizer, scheduler = build_optimizer(model, args, num_training_steps)

    trainer = MultilingualNERTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_full,
        data_collator=collator,
        compute_metrics=ner_metrics.build_compute_metrics(ner_data.ID2LABEL),
        optimizers=(optimizer, scheduler),
        train_languages=train_langs,
        sampling_alpha=args.sampling_alpha,
    )
    trainer.add_callback(cb.EarlyStoppingOnMetric("eval_overall_f1", patience=args.patience))
    trainer.add_callback(cb.RNGStateGuard())
    trainer.add_callback(cb.ParameterHealthCallback())
    trainer.add_callback(cb.LanguageCurriculumCallback())
    trainer.add_callback(cb.DistributedHousekeepingCallback())
    trainer.add_callback(cb.MetricsJsonlLogger(args.output_dir))

    train_result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model()
    trainer.save_state()

    results = {"train_" + k: v for k, v in train_result.metrics.items()}
    results.update(trainer.evaluate(metric_key_prefix="eval"))
    results.update(evaluate_per_language(trainer, eval_by_lang, "eval"))
    if test_by_lang:
        results.update(evaluate_per_language(trainer, test_by_lang, "test"))

    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(args.output_dir)
        ner_utils.save_json(results, os.path.join(args.output_dir, "all_results.json"))
        ner_utils.save_json(vars(args), os.path.join(args.output_dir, "run_args.json"))
        logger.info("final results: %s", {k: round(v, 4) for k, v in results.items() if isinstance(v, float)})
    ner_utils.cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
