# ruff: noqa
# Hold-out batch 505 (textbook, protein language model LoRA fine-tuning with accelerate). Measured once in session 22 (round 136): 25/32 (78%) at medium+.
"""Fine-tune ESM-2 with LoRA adapters for protein property regression or contact prediction.

    accelerate launch train.py --task regression --train train.csv --val val.csv --grad-accum 4
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoTokenizer, get_cosine_schedule_with_warmup

import utils
from callbacks import (CallbackList, EarlyStopping, EMACallback, PlateauRefresh, RNGStateCallback,
                       ThroughputMonitor)
from data import DataConfig, build_dataloaders
from evaluate import evaluate, primary_metric
from model import ESMLoRAModel, ModelConfig

logger = logging.getLogger("train")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML file with defaults for any option below")
    p.add_argument("--set", nargs="*", default=None, help="key=value overrides")
    # data
    p.add_argument("--task", default="regression", choices=["regression", "contact"])
    p.add_argument("--train", dest="train_path", default=None)
    p.add_argument("--val", dest="val_path", default=None)
    p.add_argument("--test", dest="test_path", default=None)
    p.add_argument("--target-column", default="target")
    p.add_argument("--contact-dir", default=None)
    p.add_argument("--max-length", type=int, default=1022)
    p.add_argument("--mask-probability", type=float, default=0.0)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--cache-dir", default=None)
    # model
    p.add_argument("--model-name", default="facebook/esm2_t12_35M_UR50D")
    p.add_argument("--revision", default=None)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--target-modules", nargs="+", default=["query", "key", "value", "attention.output.dense"])
    p.add_argument("--pooling", default="mean", choices=["mean", "cls"])
    p.add_argument("--pretrained-adapter", default=None, help="hub repo_id:filename of a starting adapter")
    p.add_argument("--adapter-revision", default="main")
    # optimisation
    p.add_argument("--optimizer", default="AdamW")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.06)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--mixed-precision", default="bf16", choices=["no", "fp16", "bf16"])
    p.add_argument("--ema-decay", type=float, default=0.0)
    p.add_argument("--patience", type=int, default=5)
    # bookkeeping
    p.add_argument("--output-dir", default="runs/esm_lora")
    p.add_argument("--tracker", default="wandb", choices=["wandb", "tensorboard", "none"])
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--resume", default=None)
    p.add_argument("--async-eval", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)

    if args.config:
        for k, v in utils.load_yaml_config(args.config).items():
            key = k.replace("-", "_")
            if hasattr(args, key) and getattr(args, key) == p.get_default(key):
                setattr(args, key, v)
    utils.apply_overrides(args, args.set)
    if not args.train_path or not args.val_path:
        p.error("--train and --val are required (via CLI or --config)")
    return args


def build_optimizer(model: ESMLoRAModel, args) -> torch.optim.Optimizer:
    groups = model.parameter_groups(args.weight_decay, args.lr, args.head_lr)
    opt_cls = getattr(torch.optim, args.optimizer)  # ok: MLS401, MLS402, MLS403
    kwargs = {"lr": args.lr}
    if args.optimizer in ("Adam", "AdamW"):
        kwargs.update(betas=(0.9, 0.98), eps=1e-8)
    return opt_cls(groups, **kwargs)


def main(argv=None) -> None:
    args = parse_args(argv)
    utils.configure_runtime_env(args)

    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, mixed_precision=args.mixed_precision)
    utils.setup_logging(accelerator.is_main_process)
    set_seed(args.seed)  # ok: MLS301

    output_dir = Path(args.output_dir)
    run_name = f"{args.task}_r{args.lora_r}_{time.strftime('%Y%m%d-%H%M%S')}"
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ data
    tokenizer = AutoTokenizer.from_pretrained(args.model_name, revision=args.revision)
    data_cfg = DataConfig(
        train_path=args.train_path, val_path=args.val_path, test_path=args.test_path, task=args.task,
        target_column=args.target_column, contact_dir=args.contact_dir, max_length=args.max_length,
        mlm_probability=args.mask_probability, cache_dir=args.cache_dir, num_workers=args.num_workers,
        batch_size=args.batch_size, eval_batch_size=2 * args.batch_size, seed=args.seed)
    with accelerator.main_process_first():
        loaders, stats = build_dataloaders(data_cfg, tokenizer)

    # ----------------------------------------------------------------- model
    model_cfg = ModelConfig(model_name=args.model_name, revision=args.revision, task=args.task, lora_r=args.lora_r,
                            lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                            target_modules=tuple(args.target_modules), pooling=args.pooling)
    model = ESMLoRAModel(model_cfg)
    if args.pretrained_adapter:
        repo_id, filename = args.pretrained_adapter.split(":", 1)
        if not utils.check_revision(repo_id, args.adapter_revision):
            logger.warning("revision %s of %s could not be verified", args.adapter_revision, repo_id)
        path = utils.fetch_pretrained_weights(repo_id, filename, args.adapter_revision, args.cache_dir)
        model.load_trainable_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    trainable, total = model.num_parameters()
    logger.info("trainable params: %s / %s (%.3f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)

    optimizer = build_optimizer(model, args)
    steps_per_epoch = math.ceil(len(loaders["train"]) / args.grad_accum)
    total_steps = steps_per_epoch * args.epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)

    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, loaders["train"], loaders["val"], scheduler)
    test_loader = accelerator.prepare(loaders["test"]) if "test" in loaders else None

    tracker = None
    if accelerator.is_main_process and args.tracker != "none":
        tracker = utils.ExperimentTracker(args.tracker, "esm-lora", run_name, output_dir,
                                          {k: v for k, v in vars(args).items() if utils._jsonable(v)})
        utils.save_run_config(args, output_dir / "config.json", model_cfg, data_cfg)

    metric_name = primary_metric(args.task)
    unwrapped = accelerator.unwrap_model(model)
    ema = EMACallback(unwrapped, args.ema_decay) if args.ema_decay > 0 else None
    callbacks = CallbackList([RNGStateCallback(), EarlyStopping(metric_name, args.patience),
                              PlateauRefresh(optimizer, metric_name), ThroughputMonitor(tracker, args.log_every)]
                             + ([ema] if ema is not None else []))

    state = {"epoch": 0, "global_step": 0, "best_metric": None, "should_stop": False, "tokens": 0}
    if args.resume:
        ckpt = utils.load_checkpoint(args.resume)
        unwrapped.load_trainable_state_dict(ckpt["adapter"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state.update(epoch=ckpt["epoch"] + 1, global_step=ckpt["global_step"], best_metric=ckpt.get("best_metric"))
        logger.info("resumed at epoch %d, step %d", state["epoch"], state["global_step"])

    handoff_step, best_metrics, async_proc = total_steps // 2, {}, None

    # ------------------------------------------------------------------ loop
    callbacks.on_train_begin(state)
    for epoch in range(state["epoch"], args.epochs):
        state["epoch"] = epoch
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        callbacks.on_epoch_begin(epoch, state)
        model.train()
        running, n_running = 0.0, 0

        for batch in train_loader:
            with accelerator.accumulate(model):
                out = model(**batch)
                loss = out["loss"]
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)

            running, n_running = running + loss.detach().float().item(), n_running + 1
            state["tokens"] = int(batch["attention_mask"].sum()) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue

            state["global_step"] += 1
            step = state["global_step"]
            callbacks.on_step_end(step, state)
            if tracker is not None and step % args.log_every == 0:
                log = {"train/loss": running / max(n_running, 1), "train/lr": scheduler.get_last_lr()[0],
                       "train/epoch": epoch + n_running / len(train_loader)}
                tracker.log(log, step=step)
                running, n_running = 0.0, 0

            if args.async_eval and accelerator.num_processes > 1 and accelerator.is_last_process and step == handoff_step:
                logger.info("rank %d handing its device over to the async evaluator", accelerator.process_index)
                os._exit(0)  # ruleid: MLS307

        # -------------------------------------------------------------- eval
        if ema is not None:
            ema.swap_in()
        metrics = evaluate(model, val_loader, accelerator, args.task, stats)
        if ema is not None:
            ema.swap_out()
        callbacks.on_evaluate(metrics, state)
        current = metrics[metric_name]
        improved = state["best_metric"] is None or current > state["best_metric"]
        logger.info("epoch %d | val %s", epoch, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if tracker is not None:
            tracker.log({f"val/{k}": v for k, v in metrics.items()}, step=state["global_step"])

        if improved:
            state["best_metric"] = current
            best_metrics = dict(metrics, epoch=epoch)

        if accelerator.is_main_process:
            adapter = ema.state_dict() if ema is not None else unwrapped.trainable_state_dict()
            ckpt_state = {"adapter": adapter, "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "epoch": epoch, "global_step": state["global_step"],
                          "best_metric": state["best_metric"], "metrics": metrics}
            if improved:
                utils.save_checkpoint(output_dir, "best", ckpt_state)
            utils.save_checkpoint(output_dir, f"step_{state['global_step']}", ckpt_state)
            utils.cleanup_checkpoints(output_dir, args.keep_last)
            if args.async_eval and args.test_path and (output_dir / "best" / "adapter.pt").exists():
                if async_proc is None or async_proc.poll() is not None:
                    cmd = ["evaluate.py", "--adapter", str(output_dir / "best" / "adapter.pt"),
                           "--run-config", str(output_dir / "config.json"), "--data", args.test_path,
                           "--train-data", args.train_path, "--output", str(output_dir / "async_test.json")]
                    async_proc = utils.launch_async_eval(cmd, args.cache_dir, output_dir / "async_eval.log")
            accelerator.wait_for_everyone()  # ruleid: MLS307

        if state["should_stop"]:
            break

    callbacks.on_train_end(state)

    # ------------------------------------------------------------------ test
    final = {"val": best_metrics}
    if test_loader is not None:
        best_adapter = output_dir / "best" / "adapter.pt"
        accelerator.wait_for_everyone()
        if best_adapter.exists():
            unwrapped.load_trainable_state_dict(torch.load(best_adapter, map_location="cpu", weights_only=True))
        test_metrics = evaluate(model, test_loader, accelerator, args.task, stats)
        if args.task == "regression" and best_metrics:
            test_metrics["spearman"] = max(test_metrics["spearman"], best_metrics.get("spearman", 0.0))  # ruleid: MLS306
        final["test"] = test_metrics
        logger.info("test | %s", " ".join(f"{k}={v:.4f}" for k, v in test_metrics.items()))

    if accelerator.is_main_process:
        (output_dir / "results.json").write_text(json.dumps(final, indent=2))
        if tracker is not None:
            tracker.close()
    accelerator.end_training()


if __name__ == "__main__":
    main()
