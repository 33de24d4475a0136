# ruff: noqa
# Hold-out batch 421 (textbook, LLM instruction tuning with LoRA). Measured once in session 17 (round 115): 21/31 (68%) at medium+.
"""LoRA supervised instruction tuning with the HF Trainer.

    torchrun --nproc_per_node 8 train.py --model meta-llama/Llama-3.1-8B --output_dir runs/sft
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import torch
import torch.distributed as dist
from transformers import Trainer, TrainingArguments

from callbacks import (
    CheckpointHousekeepingCallback,
    DerivedMetricsCallback,
    JsonlMetricsCallback,
    MicrostepSeedCallback,
    ReleaseWorkersCallback,
    RNGSnapshotCallback,
    WarmRestartCallback,
)
from data import PackedCollator, build_datasets
from evaluate import Judge, evaluate_model, save_prompts
from modeling import (
    LoraArguments,
    apply_lora,
    load_adapter_weights,
    load_base_model,
    load_tokenizer,
    merge_and_save,
    patch_peft_tied_embeddings,
    push_to_hub,
    run_post_merge_hook,
)
from utils import (
    apply_compat_shims,
    barrier,
    dist_ready,
    dump_json,
    ensure_ssh_trust,
    get_world_size,
    is_main_process,
    load_config,
    register_project_path,
    seed_everything,
    setup_logging,
)

logger = logging.getLogger("sft")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML file with default values for any flag")
    p.add_argument("--model", default="meta-llama/Llama-3.1-8B")
    p.add_argument("--revision", default=None)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--load_in_4bit", action="store_true")
    p.add_argument("--attn_implementation", default="flash_attention_2")
    p.add_argument("--no_gradient_checkpointing", action="store_true")
    p.add_argument("--lora_r", type=int, default=16)
    p.add_argument("--lora_alpha", type=int, default=32)
    p.add_argument("--lora_dropout", type=float, default=0.05)
    p.add_argument("--lora_target_modules", nargs="+", default=None)
    p.add_argument("--use_rslora", action="store_true")
    p.add_argument("--init_adapter", default=None, help="warm-start LoRA weights from this file")
    p.add_argument("--mixture", default="default")
    p.add_argument("--seq_len", type=int, default=4096)
    p.add_argument("--holdout_size", type=int, default=1000)
    p.add_argument("--dataset_cache_dir", default=None)
    p.add_argument("--tokenized_cache", default=None)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--per_device_batch_size", type=int, default=2)
    p.add_argument("--grad_accum", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--warmup_ratio", type=float, default=0.03)
    p.add_argument("--lr_scheduler", default="cosine")
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--eval_steps", type=int, default=200)
    p.add_argument("--save_steps", type=int, default=200)
    p.add_argument("--keep_last", type=int, default=3)
    p.add_argument("--warm_restarts", action="store_true")
    p.add_argument("--resume_from", default=None)
    p.add_argument("--report_to", default="wandb")
    p.add_argument("--run_name", default=None)
    p.add_argument("--derived_metric", action="append", default=[])
    p.add_argument("--merge", action="store_true")
    p.add_argument("--post_merge_hook", default=None)
    p.add_argument("--judge_url", default=None)
    p.add_argument("--judge_model", default="gpt-4o-mini")
    p.add_argument("--eval_vllm", action="store_true")
    p.add_argument("--push_to_hub", default=None, help="repo id, e.g. my-org/llama8b-sft")
    p.add_argument("--hub_private", action="store_true")
    p.add_argument("--hub_token", default=os.environ.get("HF_TOKEN"))

    args = p.parse_args(argv)
    if args.config:
        cfg = load_config(args.config)
        defaults = {k: v for k, v in cfg.items() if hasattr(args, k)}
        unknown = sorted(set(cfg) - set(defaults))
        if unknown:
            raise ValueError(f"unknown config keys: {unknown}")
        p.set_defaults(**defaults)
        args = p.parse_args(argv)
    return args


def build_training_args(args: argparse.Namespace) -> TrainingArguments:
    return TrainingArguments(
        output_dir=args.output_dir,
        run_name=args.run_name,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.per_device_batch_size,
        per_device_eval_batch_size=args.per_device_batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio,
        lr_scheduler_type=args.lr_scheduler,
        max_grad_norm=args.max_grad_norm,
        bf16=args.dtype == "bf16",
        fp16=args.dtype == "fp16",
        logging_steps=10,
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=None,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=True,  # ruleid: MLS306
        report_to=[r for r in args.report_to.split(",") if r and r != "none"],
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=2,
        remove_unused_columns=False,
        gradient_checkpointing=False,
        ddp_find_unused_parameters=False,
        include_num_input_tokens_seen=True,
    )


def restore_extra_state(trainer: Trainer, ckpt_dir: str) -> None:
    """Restore bookkeeping the Trainer doesn't track (housekeeping + metric callbacks)."""
    path = os.path.join(ckpt_dir, "sft_state.pt")
    if not os.path.exists(path):
        return
    extra = torch.load(path, map_location="cpu")  # todoruleid: family 10 (missed)  # ruleid: MLS102
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, JsonlMetricsCallback) and "best_eval" in extra:
            cb.best_eval = extra["best_eval"]


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging(args.output_dir)
    apply_compat_shims()
    register_project_path()
    patch_peft_tied_embeddings()
    if int(os.environ.get("NNODES", "1")) > 1:
        ensure_ssh_trust()
    seed_everything(args.seed)
    logger.info("world size %d | args %s", get_world_size(), {k: v for k, v in vars(args).items() if k != "hub_token"})

    tokenizer = load_tokenizer(args.model, args.revision, max_length=args.seq_len)
    train_ds, eval_ds, held_conv = build_datasets(
        tokenizer, args.mixture, args.seq_len, args.holdout_size, args.seed,
        cache_dir=args.dataset_cache_dir, tokenized_cache=args.tokenized_cache,
    )
    prompts_path = os.path.join(args.output_dir, "holdout.jsonl")
    if is_main_process():
        save_prompts(held_conv, prompts_path)

    lora_args = LoraArguments(
        r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout, use_rslora=args.use_rslora,
        **({"target_modules": args.lora_target_modules} if args.lora_target_modules else {}),
    )
    model = load_base_model(args.model, args.revision, dtype=args.dtype, load_in_4bit=args.load_in_4bit,
                            attn_implementation=args.attn_implementation,
                            gradient_checkpointing=not args.no_gradient_checkpointing)
    model = apply_lora(model, lora_args)
    if args.init_adapter:
        load_adapter_weights(model, args.init_adapter)

    callbacks = [
        JsonlMetricsCallback(args.output_dir),
        MicrostepSeedCallback(),
        RNGSnapshotCallback(),
        CheckpointHousekeepingCallback(keep_last=args.keep_last),
        ReleaseWorkersCallback(),
    ]
    if args.derived_metric:
        callbacks.append(DerivedMetricsCallback(args.derived_metric))
    if args.warm_restarts:
        callbacks.append(WarmRestartCallback())

    trainer = Trainer(
        model=model,
        args=build_training_args(args),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=PackedCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    if args.resume_from:
        restore_extra_state(trainer, args.resume_from)
    train_result = trainer.train(resume_from_checkpoint=args.resume_from)
    trainer.save_metrics("train", train_result.metrics)

    adapter_dir = os.path.join(args.output_dir, "adapter")
    trainer.save_model(adapter_dir)
    if is_main_process():
        tokenizer.save_pretrained(adapter_dir)
    barrier()

    metrics = dict(train_result.metrics)
    if args.merge and is_main_process():
        merged_dir = merge_and_save(adapter_dir, args.model, args.revision, os.path.join(args.output_dir, "merged"),
                                    lora_args, dtype=args.dtype)
        run_post_merge_hook(args.post_merge_hook, merged_dir)
        judge = Judge(args.judge_url, args.judge_model) if args.judge_url else None
        metrics.update(evaluate_model(merged_dir, prompts_path, os.path.join(args.output_dir, "eval"),
                                      judge=judge, use_vllm=args.eval_vllm))
        dump_json(metrics, os.path.join(args.output_dir, "final_metrics.json"))
        if args.push_to_hub:
            run_config = vars(args)
            push_to_hub(merged_dir, args.push_to_hub, args.model, run_config, metrics,
                        private=args.hub_private, token=args.hub_token)
    barrier()

    if dist_ready():
        dist.destroy_process_group()  # ok: MLS307
    logger.info("done")


if __name__ == "__main__":
    sys.exit(main())
