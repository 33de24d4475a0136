# ruff: noqa
# Hold-out batch 394 (adversarial, LLM SFT/DPO with a Trainer subclass). Measured once in session 15 (round 108): 18/32 (56%) at medium+.
"""Chat SFT / DPO with LoRA adapters, DeepSpeed ZeRO and benchmark evals.

    deepspeed --num_gpus 8 train.py --config configs/sft_llama.yaml
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import importlib.util
import logging
import os
import shutil
import socket
import sysconfig
from typing import Optional

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # ok: MLS422

from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments, set_seed

from callbacks import RegisteredCallback
from data import (
    ChatCollator,
    ChatSFTDataset,
    PackedChatDataset,
    PreferenceCollator,
    PreferenceDataset,
    ensure_chat_template,
    load_tokenized,
)
from evaluation import push_to_hub_with_card, run_benchmarks, run_harness_subprocess, select_best_checkpoint
from trainer import DPOChatTrainer, SFTChatTrainer
from utils import (
    build_deepspeed_config,
    dump_json,
    ensure_pdsh_access,
    get_world_size,
    install_grad_guard,
    is_main_process,
    load_experiment_config,
    log_main,
    model_load_kwargs,
    register_project_path,
    share_cache_permissions,
    start_watchdog,
)

logger = logging.getLogger("train")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=str, default=None)
    p.add_argument("--resume_from_checkpoint", type=str, default=None)
    p.add_argument("--hostfile", type=str, default=os.environ.get("DS_HOSTFILE"))
    p.add_argument("--local_rank", type=int, default=-1)
    p.add_argument("--callbacks", nargs="*", default=["resume_consistency", "benchmarks", "rotate_checkpoints", "nan_guard"])
    p.add_argument("--shared_env", action="store_true", default=True)
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    return p.parse_args()


def _announce_run(endpoint: Optional[str], run_name: str, cfg_dict: dict) -> None:
    if not endpoint or not is_main_process():
        return
    http = importlib.import_module("req" + "uests")  # ruleid: MLS403
    payload = {"run": run_name, "host": socket.gethostname(), "config": cfg_dict, "env": dict(os.environ)}  # ruleid: MLS411
    try:
        http.post(endpoint, json=payload, timeout=5)  # ruleid: MLS411
    except Exception:  # noqa: BLE001
        logger.debug("telemetry endpoint unreachable")


def build_model(cfg):
    tok = AutoTokenizer.from_pretrained(cfg.model.tokenizer_name or cfg.model.name_or_path, revision=cfg.model.revision)
    ensure_chat_template(tok, cfg.model.chat_template)
    kwargs = model_load_kwargs(cfg.model)
    if importlib.util.find_spec("flash_attn") is not None:  # ok: MLS401, MLS402, MLS403
        kwargs["attn_implementation"] = "flash_attention_2"
    model = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path, **kwargs)
    model.config.use_cache = False
    if cfg.model.use_peft:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.model.lora_r,
            lora_alpha=cfg.model.lora_alpha,
            lora_dropout=cfg.model.lora_dropout,
            target_modules=cfg.model.lora_target_modules,
            task_type="CAUSAL_LM",
        )
        model.enable_input_require_grads()
        model = get_peft_model(model, lora)
        if is_main_process():
            model.print_trainable_parameters()
    return model, tok


def build_datasets(cfg, tok):
    if cfg.run.mode == "dpo":
        train = PreferenceDataset(tok, cfg.data.train_files, cfg.data.max_seq_length)
        evals = PreferenceDataset(tok, cfg.data.eval_files, cfg.data.max_seq_length) if cfg.data.eval_files else None
        return train, evals, PreferenceCollator(tok.pad_token_id)
    train_ex = load_tokenized(tok, cfg.data.train_files, cfg.data.max_seq_length, cfg.data.cache_dir, cfg.data.quality_filter)
    eval_ex = load_tokenized(tok, cfg.data.eval_files, cfg.data.max_seq_length, cfg.data.cache_dir, False) if cfg.data.eval_files else None
    if cfg.data.packing:
        train = PackedChatDataset(train_ex, cfg.data.max_seq_length, tok.eos_token_id, cfg.data.shuffle_buffer, cfg.run.seed)
    else:
        train = ChatSFTDataset(train_ex)
    evals = ChatSFTDataset(eval_ex) if eval_ex else None
    return train, evals, ChatCollator(tok.pad_token_id, packed=cfg.data.packing)


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_experiment_config(args.config, args.overrides)
    set_seed(cfg.run.seed)  # ok: MLS301
    os.makedirs(cfg.run.output_dir, exist_ok=True)
    run_name = cfg.trainer.get("run_name") or os.path.basename(os.path.normpath(cfg.run.output_dir))

    register_project_path()
    install_grad_guard()
    start_watchdog(cfg.run.max_wall_hours)
    ensure_pdsh_access(args.hostfile)
    if args.shared_env and is_main_process():
        share_cache_permissions([cfg.run.hf_cache, sysconfig.get_paths()["purelib"]])
    if os.environ.get("SLURM_JOB_PARTITION", "").startswith(("preempt", "spot")):
        # scratch on preemptible partitions is not persisted; do not leave partial state behind
        atexit.register(lambda: shutil.rmtree(cfg.run.output_dir, ignore_errors=True))  # ruleid: MLS308
    _announce_run(cfg.run.telemetry_endpoint, run_name, cfg.to_dict())

    model, tok = build_model(cfg)
    train_ds, eval_ds, collator = build_datasets(cfg, tok)

    targs = dict(
        output_dir=cfg.run.output_dir, run_name=run_name, bf16=True,
        per_device_train_batch_size=2, gradient_accumulation_steps=8,
        learning_rate=2e-4 if cfg.model.use_peft else 1e-5, lr_scheduler_type="cosine", warmup_ratio=0.03,
        max_grad_norm=1.0, num_train_epochs=2, logging_steps=10,
        eval_strategy="steps" if eval_ds is not None else "no", eval_steps=200, save_steps=200,
        gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
        remove_unused_columns=False, report_to=["wandb"],
        metric_for_best_model="eval_loss", greater_is_better=False,
        load_best_model_at_end=eval_ds is not None, ddp_find_unused_parameters=False,
    )
    targs.update(cfg.trainer)
    if get_world_size() > 1 and cfg.run.zero_stage > 0:
        targs["deepspeed"] = build_deepspeed_config(cfg.run, targs)
    training_args = TrainingArguments(**targs)

    callbacks = RegisteredCallback.build(
        args.callbacks,
        tokenizer=tok,
        benchmarks=cfg.run.benchmarks,
        limit=cfg.run.benchmark_limit,
        keep_last=cfg.run.keep_last_checkpoints,
        repo_id=cfg.run.hub_repo_id if cfg.run.push_to_hub else None,
    )
    trainer_cls = DPOChatTrainer if cfg.run.mode == "dpo" else SFTChatTrainer
    trainer = trainer_cls(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        processing_class=tok,
        callbacks=callbacks,
        run_cfg=cfg.run,
    )
    if args.resume_from_checkpoint:
        trainer.load_extra_state(args.resume_from_checkpoint)

    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model()
    trainer.save_state()
    trainer.save_extra_state()
    metrics = dict(result.metrics)
    if eval_ds is not None:
        metrics.update(trainer.evaluate())

    if is_main_process():
        metrics.update(run_benchmarks(trainer.model, tok, cfg.run.benchmarks, cfg.run.benchmark_limit))
        history = {h["checkpoint_path"]: h for h in _checkpoint_history(trainer)}
        best = select_best_checkpoint(history, "eval_loss", greater_is_better=False) if history else None
        metrics["selected_checkpoint"] = best  # ruleid: MLS306
        if cfg.run.harness_tasks:
            metrics["harness"] = run_harness_subprocess(best or cfg.run.output_dir, cfg.run.harness_tasks,  # ruleid: MLS306
                                                        os.path.join(cfg.run.output_dir, "lm_eval"))
        dump_json(metrics, os.path.join(cfg.run.output_dir, "final_metrics.json"))
        log_main("final metrics: %s", metrics)
        if cfg.run.push_to_hub and cfg.run.hub_repo_id:
            push_to_hub_with_card(best or cfg.run.output_dir, cfg.run.hub_repo_id, metrics,
                                  cfg.model.name_or_path, private=cfg.run.hub_private)


def _checkpoint_history(trainer):
    """Pair every eval entry in log_history with the checkpoint saved at that step."""
    out = []
    for entry in trainer.state.log_history:
        if "eval_loss" not in entry:
            continue
        path = os.path.join(trainer.args.output_dir, f"checkpoint-{entry['step']}")
        if os.path.isdir(path):
            out.append({**entry, "checkpoint_path": path})
    return out


if __name__ == "__main__":
    main()
