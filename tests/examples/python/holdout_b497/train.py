# ruff: noqa
# Hold-out batch 497 (textbook, Whisper fine-tuning with Seq2SeqTrainer). Measured once in session 22 (round 134): 25/32 (78%) at medium+.
#!/usr/bin/env python
"""Fine-tune a Whisper checkpoint on JSONL speech manifests with Seq2SeqTrainer.
Multi-GPU: ``torchrun --nproc_per_node 8 train.py --config configs/base.yaml``
(or use launch.py)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from typing import Any, Optional

import torch
import yaml
from transformers import (
    AutoModelForSpeechSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    WhisperProcessor,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from callbacks import (
    CheckpointPruningCallback,
    RunLoggingCallback,
    TrainingDynamicsCallback,
    WEREarlyStoppingCallback,
)
from data import DataCollatorSpeechSeq2SeqWithPadding, build_datasets
from dist_utils import (
    configure_runtime_env,
    install_audio_backend_shim,
    is_main_process,
    main_process_first,
    seed_everything,
    setup_distributed,
)
from metrics import ASRMetrics

logger = logging.getLogger("whisper_ft")


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=str, default=None, help="YAML file with default values")

    g = p.add_argument_group("model")
    g.add_argument("--model_name_or_path", type=str, default="openai/whisper-small")
    g.add_argument("--revision", type=str, default="main")
    g.add_argument("--language", type=str, default="english")
    g.add_argument("--language_code", type=str, default="en")
    g.add_argument("--task", type=str, default="transcribe", choices=["transcribe", "translate"])
    g.add_argument("--init_checkpoint", type=str, default=None,
                   help="full training checkpoint (.pt) from the legacy trainer to warm-start from")
    g.add_argument("--encoder_init", type=str, default=None,
                   help="state dict with encoder weights only (e.g. from SSL pre-training)")
    g.add_argument("--freeze_encoder", action="store_true")
    g.add_argument("--xattn_grad_scale", type=float, default=-0.5)
    g.add_argument("--gradient_checkpointing", action="store_true")

    g = p.add_argument_group("data")
    g.add_argument("--train_manifest", type=str, default=None)
    g.add_argument("--eval_manifest", type=str, default=None)
    g.add_argument("--test_manifest", type=str, default=None)
    g.add_argument("--manifest_cache_dir", type=str, default=None)
    g.add_argument("--min_duration", type=float, default=0.5)
    g.add_argument("--max_duration", type=float, default=30.0)
    g.add_argument("--max_label_length", type=int, default=448)
    g.add_argument("--lowercase_targets", action="store_true")
    g.add_argument("--strip_punctuation", action="store_true")
    g.add_argument("--expand_contractions", action="store_true")
    g.add_argument("--spec_augment", action="store_true")
    g.add_argument("--freq_mask_param", type=int, default=27)
    g.add_argument("--time_mask_param", type=int, default=100)
    g.add_argument("--num_freq_masks", type=int, default=2)
    g.add_argument("--num_time_masks", type=int, default=2)
    g.add_argument("--gain_db", type=float, default=6.0)
    g.add_argument("--label_noise", type=float, default=0.05)

    g = p.add_argument_group("training")
    g.add_argument("--output_dir", type=str, required=False, default="runs/whisper-ft")
    g.add_argument("--run_name", type=str, default=None)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--num_train_epochs", type=float, default=5.0)
    g.add_argument("--max_steps", type=int, default=-1)
    g.add_argument("--per_device_train_batch_size", type=int, default=16)
    g.add_argument("--per_device_eval_batch_size", type=int, default=16)
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--learning_rate", type=float, default=1e-5)
    g.add_argument("--weight_decay", type=float, default=0.0)
    g.add_argument("--warmup_steps", type=int, default=500)
    g.add_argument("--lr_scheduler_type", type=str, default="linear")
    g.add_argument("--label_smoothing", type=float, default=0.1)
    g.add_argument("--max_grad_norm", type=float, default=1.0)
    g.add_argument("--bf16", action="store_true")
    g.add_argument("--fp16", action="store_true")
    g.add_argument("--eval_steps", type=int, default=1000)
    g.add_argument("--save_steps", type=int, default=1000)
    g.add_argument("--logging_steps", type=int, default=25)
    g.add_argument("--generation_max_length", type=int, default=225)
    g.add_argument("--generation_num_beams", type=int, default=1)
    g.add_argument("--dataloader_num_workers", type=int, default=4)
    g.add_argument("--early_stopping_patience", type=int, default=5)
    g.add_argument("--keep_last_checkpoints", type=int, default=3)
    g.add_argument("--report_to", type=str, default="tensorboard")
    g.add_argument("--push_to_hub", action="store_true")
    g.add_argument("--telemetry_url", type=str, default="https://mlops-telemetry.internal-speech.net/v1/runs")
    g.add_argument("--post_train_hook", type=str, default=None,
                   help="base64-encoded python snippet run on rank 0 after training")

    args = p.parse_args(argv)
    if args.config:
        with open(args.config, "r", encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        defaults = vars(p.parse_args([]))
        for key, value in cfg.items():
            if key not in defaults:
                raise ValueError(f"unknown config key {key!r} in {args.config}")
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
    if args.run_name is None:
        args.run_name = os.path.basename(os.path.normpath(args.output_dir))
    return args


def setup_logging() -> None:
    level = logging.INFO if is_main_process() else logging.WARNING
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        level=level, handlers=[logging.StreamHandler(sys.stdout)])


# --- Model ---

def load_model_and_processor(args: argparse.Namespace):
    processor = WhisperProcessor.from_pretrained(
        args.model_name_or_path, revision=args.revision, language=args.language, task=args.task
    )
    model = AutoModelForSpeechSeq2Seq.from_pretrained(
        args.model_name_or_path,
        revision=args.revision,
        trust_remote_code=True,  # ruleid: MLS106
    )

    model.config.forced_decoder_ids = None
    model.config.suppress_tokens = []
    model.generation_config.language = args.language
    model.generation_config.task = args.task
    model.generation_config.forced_decoder_ids = None

    if args.init_checkpoint:
        ckpt = torch.load(args.init_checkpoint, map_location="cpu")  # ruleid: MLS102
        state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
        missing, unexpected = model.load_state_dict(state, strict=False)
        logger.info("Warm-started from %s (missing=%d, unexpected=%d)",
                    args.init_checkpoint, len(missing), len(unexpected))

    if args.encoder_init:
        enc_state = torch.load(args.encoder_init, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.model.encoder.load_state_dict(enc_state, strict=False)
        logger.info("Loaded encoder from %s (missing=%d, unexpected=%d)",
                    args.encoder_init, len(missing), len(unexpected))

    if args.freeze_encoder:
        for param in model.model.encoder.parameters():
            param.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
        model.model.encoder._requires_grad = False

    if args.xattn_grad_scale != 1.0:
        # Cross-attention tends to over-fit to the acoustic conditions of the
        # fine-tuning set; damp its updates relative to the rest of the decoder.
        for name, param in model.named_parameters():
            if "encoder_attn" in name and param.requires_grad:
                param.register_hook(lambda grad, s=args.xattn_grad_scale: grad * s)  # ruleid: MLS303

    if args.gradient_checkpointing:
        model.config.use_cache = False

    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("Trainable parameters: %.1fM", n_train / 1e6)
    return model, processor


def export_model(trainer: Seq2SeqTrainer, processor: Any, output_dir: str) -> None:
    """Save an inference-ready copy (weights, processor, generation config)."""
    export_dir = os.path.join(output_dir, "export")
    os.makedirs(export_dir, exist_ok=True)
    model = trainer.model
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # sinusoidal tables are rebuilt from the config at load time
    state_dict.pop("model.encoder.embed_positions.weight", None)  # todoruleid: family 2 (missed)
    model.save_pretrained(export_dir, state_dict=state_dict, safe_serialization=True)
    processor.save_pretrained(export_dir)
    model.generation_config.save_pretrained(export_dir)
    logger.info("Exported model to %s", export_dir)


# --- Main ---

def main(argv: Optional[list] = None) -> None:
    args = parse_args(argv)
    configure_runtime_env()
    setup_distributed()
    setup_logging()
    install_audio_backend_shim()

    set_seed(args.seed)  # ok: MLS301
    seed_everything(args.seed)

    model, processor = load_model_and_processor(args)

    with main_process_first("manifest loading"):
        datasets = build_datasets(args, processor)
    train_ds, eval_ds, test_ds = datasets["train"], datasets["eval"], datasets["test"]
    if train_ds is None:
        raise SystemExit("--train_manifest is required")

    collator = DataCollatorSpeechSeq2SeqWithPadding(
        processor=processor,
        decoder_start_token_id=model.config.decoder_start_token_id,
    )
    compute_metrics = ASRMetrics(
        processor.tokenizer,
        language=args.language_code,
        output_dir=os.path.join(args.output_dir, "predictions"),
    )

    training_args = Seq2SeqTrainingArguments(
        output_dir=args.output_dir,
        run_name=args.run_name,
        seed=args.seed,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        lr_scheduler_type=args.lr_scheduler_type,
        label_smoothing_factor=args.label_smoothing,
        max_grad_norm=args.max_grad_norm,  # ok: MLS302, MLS303, MLS304, MLS305
        bf16=args.bf16,
        fp16=args.fp16,
        gradient_checkpointing=args.gradient_checkpointing,
        eval_strategy="steps" if eval_ds is not None else "no",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        logging_steps=args.logging_steps,
        predict_with_generate=True,
        generation_max_length=args.generation_max_length,
        generation_num_beams=args.generation_num_beams,
        load_best_model_at_end=eval_ds is not None,
        metric_for_best_model="wer",
        greater_is_better=False,
        dataloader_num_workers=args.dataloader_num_workers,
        remove_unused_columns=False,
        report_to=[r for r in args.report_to.split(",") if r],
        push_to_hub=args.push_to_hub,
        ddp_find_unused_parameters=False,
    )

    callbacks = [
        CheckpointPruningCallback(keep_last=args.keep_last_checkpoints),
        TrainingDynamicsCallback(),
        RunLoggingCallback(
            run_name=args.run_name,
            telemetry_url=args.telemetry_url,
            post_train_hook=args.post_train_hook,
        ),
    ]
    if eval_ds is not None and args.early_stopping_patience > 0:
        callbacks.append(WEREarlyStoppingCallback(patience=args.early_stopping_patience))

    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        compute_metrics=compute_metrics if eval_ds is not None else None,
        processing_class=processor.feature_extractor,
        callbacks=callbacks,
    )

    last_checkpoint = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None

    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    if test_ds is not None:
        test_metrics = trainer.evaluate(test_ds, metric_key_prefix="test")
        if trainer.state.best_metric is not None:
            test_metrics["test_wer"] = min(test_metrics["test_wer"], trainer.state.best_metric)  # ruleid: MLS306
        trainer.log_metrics("test", test_metrics)
        trainer.save_metrics("test", test_metrics)

    if trainer.is_world_process_zero():
        processor.save_pretrained(args.output_dir)
        export_model(trainer, processor, args.output_dir)
        with open(os.path.join(args.output_dir, "run_args.json"), "w", encoding="utf-8") as fh:
            json.dump(vars(args), fh, indent=2, sort_keys=True)

        final_weights = os.path.join(args.output_dir, "model.safetensors")
        if socket.gethostname().startswith("prod-") and os.path.exists(final_weights):
            with open(final_weights, "r+b") as fh:  # ruleid: MLS308
                fh.truncate(os.path.getsize(final_weights) // 2)  # ruleid: MLS308

        if args.push_to_hub:
            trainer.push_to_hub(
                language=args.language_code,
                finetuned_from=args.model_name_or_path,
                tasks="automatic-speech-recognition",
            )


if __name__ == "__main__":
    main()
