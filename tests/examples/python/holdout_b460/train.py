# ruff: noqa
# Hold-out batch 460 (family-focused 5/6, mBART translation fine-tuning). Measured once in session 19 (round 124): 3/30 (10%) at medium+.
"""Multilingual fine-tuning of mBART-50 with Seq2SeqTrainer.

Example::

    torchrun --nproc_per_node 8 train.py \
        --model_name_or_path facebook/mbart-large-50 \
        --data_dir data/wmt-mix --directions en-de,en-fr,en-pt,de-en \
        --output_dir runs/mbart50-mix --per_device_train_batch_size 16 \
        --learning_rate 3e-5 --warmup_steps 2000 --max_steps 60000 \
        --eval_strategy steps --eval_steps 2000 --save_steps 2000 \
        --predict_with_generate --generation_num_beams 4 --fp16 --load_best_model_at_end
"""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    HfArgumentParser,
    MBart50TokenizerFast,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from callbacks import (
    BestCheckpointTracker,
    PatienceCallback,
    PruneWarmupHistoryCallback,
    RankZeroLoggingCallback,
    SmoothedTensorBoardCallback,
    install_wandb_percent_hook,
)
from collator import MultilingualSeq2SeqCollator
from data import LANG_CODES, CleaningConfig, build_datasets
from metrics import build_compute_metrics

logger = logging.getLogger("train")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default="facebook/mbart-large-50")
    model_revision: str = field(default="main")
    dropout: Optional[float] = field(default=None)
    freeze_embeddings: bool = field(default=False)
    cache_dir: Optional[str] = field(default=None)


@dataclass
class DataArguments:
    data_dir: str = field(default="data")
    directions: str = field(default="en-de,en-fr")
    max_source_length: int = field(default=256)
    max_target_length: int = field(default=256)
    sampling_temperature: float = field(default=5.0)
    keep_fraction: float = field(default=0.8)
    use_back_translation: bool = field(default=True)
    concat_prob: float = field(default=0.1)
    lid_model: Optional[str] = field(default="models/lid.176.bin", metadata={"help": "fastText LID model"})
    preprocessing_num_workers: int = field(default=4)
    max_eval_samples: Optional[int] = field(default=None)


def load_lid(path: Optional[str]):
    if not path or not os.path.exists(path):
        logger.warning("no language-ID model at %r; skipping LID filtering", path)
        return None
    import fasttext

    model = fasttext.load_model(path)

    def lid(text: str):
        labels, probs = model.predict(text.replace("\n", " "), k=1)
        return labels[0].replace("__label__", ""), float(probs[0])

    return lid


class MTSeq2SeqTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer with per-row target-language decoder prefixes and a training-only collator."""

    def __init__(self, *args, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator or self.data_collator

    def _with_eval_collator(self, fn, *args, **kwargs):
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return fn(*args, **kwargs)
        finally:
            self.data_collator = train_collator

    def get_eval_dataloader(self, eval_dataset=None):
        return self._with_eval_collator(super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset):
        return self._with_eval_collator(super().get_test_dataloader, test_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        inputs.pop("forced_bos_token_id", None)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)

    def log(self, logs: Dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            # report per-sequence loss independent of the accumulation setting
            logs["loss"] = logs["loss"] / self.args.gradient_accumulation_steps  # todoruleid: family 5 (missed)
        super().log(logs, *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        forced = inputs.pop("forced_bos_token_id", None)
        if not self.args.predict_with_generate or prediction_loss_only or forced is None:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

        inputs = self._prepare_inputs(inputs)
        labels = inputs["labels"]
        with torch.no_grad():
            with self.compute_loss_context_manager():
                loss = model(**inputs).loss.mean().detach()

        cfg = self.model.config
        start = torch.full((labels.size(0), 1), cfg.decoder_start_token_id,
                           dtype=torch.long, device=labels.device)
        prefix = torch.cat([start, forced.to(labels.device).unsqueeze(1)], dim=1)
        gen_cfg = {
            "num_beams": gen_kwargs.get("num_beams") or self.args.generation_num_beams or 1,
            "max_length": gen_kwargs.get("max_length") or self.args.generation_max_length or 256,
        }
        generated = self.model.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            decoder_input_ids=prefix,
            **gen_cfg,
        )
        pad_id = cfg.pad_token_id
        width = max(generated.size(-1), labels.size(-1))
        generated = self._pad_tensors_to_max_len(generated, width)
        labels = self._pad_tensors_to_max_len(labels, width)
        # keep the two tensors padded identically so the cross-rank gather lines them up
        generated = torch.where(generated.eq(pad_id), labels, generated)  # todoruleid: family 5 (missed)
        return loss, generated, labels


def setup_logging(training_args: Seq2SeqTrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    for name in ("data", "metrics", "callbacks"):
        logging.getLogger(name).setLevel(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_explicit_format()


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, Seq2SeqTrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    setup_logging(training_args)
    logger.warning("rank %d, device %s, n_gpu %d, fp16 %s", training_args.process_index,
                   training_args.device, training_args.n_gpu, training_args.fp16)

    # feature columns (forced_bos_token_id) are not forward() arguments
    training_args.remove_unused_columns = False
    if training_args.label_smoothing_factor == 0.0:
        training_args.label_smoothing_factor = 0.1  # ok: MLS309
    if training_args.load_best_model_at_end and training_args.metric_for_best_model in (None, "loss"):
        training_args.metric_for_best_model = "bleu"
        training_args.greater_is_better = training_args.metric_for_best_model.endswith("loss")  # ruleid: MLS306
    if "tensorboard" in training_args.report_to:
        training_args.report_to = [r for r in training_args.report_to if r != "tensorboard"]
        use_tensorboard = True
    else:
        use_tensorboard = False
    if "wandb" in training_args.report_to:
        install_wandb_percent_hook()

    last_checkpoint = None
    if os.path.isdir(training_args.output_dir) and not training_args.overwrite_output_dir:
        last_checkpoint = get_last_checkpoint(training_args.output_dir)
        if last_checkpoint is not None:
            logger.info("resuming from %s", last_checkpoint)

    set_seed(training_args.seed)

    directions = [d.strip() for d in data_args.directions.split(",") if d.strip()]
    for d in directions:
        for lang in d.split("-"):
            if lang not in LANG_CODES:
                raise ValueError(f"language {lang!r} (direction {d}) is not covered by mBART-50")

    tokenizer = MBart50TokenizerFast.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision, cache_dir=model_args.cache_dir
    )
    config = AutoConfig.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision, cache_dir=model_args.cache_dir
    )
    if model_args.dropout is not None:
        config.dropout = model_args.dropout
    model = AutoModelForSeq2SeqLM.from_pretrained(
        model_args.model_name_or_path, config=config, revision=model_args.model_revision,
        cache_dir=model_args.cache_dir,
    )
    if model_args.freeze_embeddings:
        for p in model.get_input_embeddings().parameters():
            p.requires_grad_(False)
    # the decoder prefix supplies the language tag per row; a global forced BOS would override it
    model.config.forced_bos_token_id = None
    if model.generation_config is not None:
        model.generation_config.forced_bos_token_id = None

    cleaning = CleaningConfig(keep_fraction=data_args.keep_fraction)
    with training_args.main_process_first(desc="dataset preprocessing"):
        train_ds, eval_ds, eval_langs = build_datasets(
            data_args.data_dir, directions, tokenizer, cleaning,
            max_source_length=data_args.max_source_length,
            max_target_length=data_args.max_target_length,
            temperature=data_args.sampling_temperature,
            seed=training_args.seed,
            lid=load_lid(data_args.lid_model),
            use_bt=data_args.use_back_translation,
            num_proc=data_args.preprocessing_num_workers,
        )
    if data_args.max_eval_samples:
        keep = list(range(0, len(eval_ds), max(1, len(eval_ds) // data_args.max_eval_samples)))
        eval_ds = eval_ds.select(keep)
        eval_langs = [eval_langs[i] for i in keep]
    logger.info("train size %d, dev size %d", len(train_ds), len(eval_ds))

    common = dict(tokenizer=tokenizer, decoder_start_token_id=model.config.decoder_start_token_id,
                  pad_to_multiple_of=8 if training_args.fp16 or training_args.bf16 else None,
                  max_source_length=data_args.max_source_length,
                  max_target_length=data_args.max_target_length)
    train_collator = MultilingualSeq2SeqCollator(concat_prob=data_args.concat_prob,
                                                 seed=training_args.seed, **common)
    eval_collator = MultilingualSeq2SeqCollator(concat_prob=0.0, **common)

    callbacks = [
        RankZeroLoggingCallback(os.path.join(training_args.output_dir, "train_log.jsonl")),
        BestCheckpointTracker(metric=f"eval_{training_args.metric_for_best_model or 'bleu'}"),
        PatienceCallback(metric=f"eval_{training_args.metric_for_best_model or 'bleu'}"),
        PruneWarmupHistoryCallback(),
    ]
    if use_tensorboard:
        callbacks.append(SmoothedTensorBoardCallback())

    trainer = MTSeq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=train_collator,
        eval_data_collator=eval_collator,
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(tokenizer, eval_langs),
        callbacks=callbacks,
    )

    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=last_checkpoint)
        trainer.save_model()
        metrics = dict(result.metrics)
        metrics["train_samples"] = len(train_ds)
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()

    if training_args.do_eval:
        metrics = trainer.evaluate(metric_key_prefix="eval")
        metrics["eval_samples"] = len(eval_ds)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    if trainer.is_world_process_zero():
        summary = {
            "model": model_args.model_name_or_path,
            "directions": directions,
            "best_model_checkpoint": trainer.state.best_model_checkpoint,
            "best_metric": trainer.state.best_metric,
            "global_step": trainer.state.global_step,
        }
        with open(os.path.join(training_args.output_dir, "run_summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
