# ruff: noqa
# Hold-out batch 470 (adversarial, LoRA instruction tuning with accelerate). Measured once in session 20 (round 127): 14/32 (44%) at medium+.
"""LoRA instruction tuning with a hand-written accelerate loop.

    accelerate launch train.py --config configs/llama2-7b-alpaca.yaml --set train.lr=1e-4
"""
from __future__ import annotations

import json
import logging
import math
import operator
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, ProjectConfiguration, set_seed
from torch.optim.lr_scheduler import LambdaLR

import utils
from config import build_deepspeed_config, dump_config, load_config, parse_args
from data import build_dataloaders
from evaluation import AdapterEMA, RngGuard, SampleLogger, compute_eval_loss, evaluate_generation
from modeling import build_model_and_tokenizer

logger = logging.getLogger("sft.train")

def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> LambdaLR:
    def lr_lambda(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return LambdaLR(optimizer, lr_lambda)

def _decay_lr(scheduler, factor: float) -> None:
    """Reduce-on-plateau on top of the cosine schedule: rescale the base LRs the
    lambda multiplies, otherwise the next scheduler.step() would undo it."""
    inner = getattr(scheduler, "scheduler", scheduler)
    state = vars(inner)
    state["base_lrs"] = [lr / factor for lr in state["base_lrs"]]  # todoruleid: family 2 (missed)

def _to_device(batch: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

def build_accelerator(cfg, world_size_hint: int = 1) -> Accelerator:
    project = ProjectConfiguration(project_dir=cfg.train.output_dir, logging_dir=str(Path(cfg.train.output_dir) / "logs"))
    plugin = None
    if cfg.deepspeed.enabled:
        plugin = DeepSpeedPlugin(hf_ds_config=build_deepspeed_config(cfg, world_size_hint))
    return Accelerator(
        gradient_accumulation_steps=cfg.train.grad_accum,
        mixed_precision=cfg.train.mixed_precision,
        log_with=cfg.train.tracker,
        project_config=project,
        deepspeed_plugin=plugin,
    )

def run_eval(cfg, model, tokenizer, eval_dl, eval_examples, accelerator, ema: Optional[AdapterEMA]) -> Dict[str, float]:
    start = time.time()
    with RngGuard(), (ema.swapped(accelerator.unwrap_model(model)) if ema is not None else nullcontext()):
        metrics = compute_eval_loss(model, eval_dl, accelerator)
        metrics.update(evaluate_generation(model, tokenizer, eval_examples, cfg, accelerator))
    metrics["eval_runtime_s"] = time.time() - start
    return metrics

def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.overrides)
    world_hint = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = build_accelerator(cfg, world_hint)
    utils.setup_logging(accelerator.is_main_process)
    set_seed(cfg.train.seed)  # ok: MLS301
    dist = utils.DistEnv(accelerator)
    logger.info("starting %s", dist.describe())

    if accelerator.is_local_main_process:
        utils.register_project_path()
        if cfg.deepspeed.enabled and dist.multi_node:
            utils.ensure_pdsh_access()
    config_path = None
    if accelerator.is_main_process:
        config_path = dump_config(cfg, cfg.train.output_dir)
        utils.announce_run(cfg.train.run_name, cfg.to_dict())
    accelerator.init_trackers(cfg.train.run_name, config={k: str(v) for k, v in cfg.to_dict()["train"].items()})
    utils.install_metric_logger(accelerator)

    resume_dir = utils.resolve_resume_dir(cfg.train.resume_from)
    model, tokenizer = build_model_and_tokenizer(
        cfg, cfg.deepspeed.enabled, resume_dir / "adapter" if resume_dir and (resume_dir / "adapter").exists() else resume_dir
    )
    train_ds, train_dl, eval_examples, eval_dl = build_dataloaders(cfg, tokenizer, accelerator)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                  betas=tuple(cfg.train.adam_betas))
    micro_batches = train_ds.estimate_len() // cfg.train.per_device_batch_size
    steps_per_epoch = max(1, micro_batches // cfg.train.grad_accum)
    total_steps = cfg.train.max_steps if cfg.train.max_steps > 0 else steps_per_epoch * cfg.train.num_epochs
    # a prepared scheduler advances once per process for every optimizer step
    sched_steps = total_steps * accelerator.num_processes
    scheduler = cosine_with_warmup(optimizer, int(cfg.train.warmup_ratio * sched_steps), sched_steps)
    # the packed loader is already sharded per rank, so it is not passed to prepare()
    model, optimizer, eval_dl, scheduler = accelerator.prepare(model, optimizer, eval_dl, scheduler)

    ema = AdapterEMA(accelerator.unwrap_model(model), cfg.train.ema_decay, cfg.train.ema_every) if cfg.train.ema_decay > 0 else None
    sampler = SampleLogger(cfg.sample, tokenizer, cfg.data.system_prompt)

    global_step, start_epoch = 0, 0
    best_metric: Optional[float] = None
    best_dir = Path(cfg.train.output_dir) / "best"
    if resume_dir is not None and (resume_dir / "trainer_state.pt").exists():
        accelerator.load_state(str(resume_dir))
        state = utils.load_trainer_state(resume_dir)
        global_step = int(state.get("global_step", 0))
        start_epoch = int(state.get("epoch", 0))
        best_metric = state.get("best_metric")
        if ema is not None:
            ema_state = utils.load_ema_state(resume_dir)
            if ema_state is not None:
                ema.load_state_dict(ema_state)
        logger.info("resumed from %s at step %d", resume_dir, global_step)
    if args.eval_only:
        metrics = run_eval(cfg, model, tokenizer, eval_dl, eval_examples, accelerator, ema)
        if accelerator.is_main_process and resume_dir is not None:
            (resume_dir / "eval_only.json").write_text(json.dumps(metrics, indent=2))
        accelerator.end_training()
        return

    better = operator.gt if cfg.eval.greater_is_better else operator.lt
    metric_key = cfg.eval.metric_for_best
    bad_evals = 0

    # DeepSpeed's engine already steps inside backward() when launched across
    # nodes with the pdsh runner; the accelerate wrapper must not step twice.
    step_fn = (lambda: None) if dist.multi_node else optimizer.step  # todoruleid: family 4 (missed)

    grad_norm = None
    model.train()
    running_loss, running_tokens, t0 = 0.0, 0, time.time()
    done = False
    for epoch in range(start_epoch, cfg.train.num_epochs):
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        for batch in train_dl:
            batch = _to_device(batch, accelerator.device)
            with accelerator.accumulate(model):
                out = model(**batch)
                loss = out.loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(trainable, cfg.train.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                step_fn()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)

            running_loss += loss.detach().float().item()
            running_tokens += int((batch["labels"] != -100).sum())
            if not accelerator.sync_gradients:
                continue

            global_step += 1
            if ema is not None:
                ema.update(accelerator.unwrap_model(model), global_step)

            if global_step % cfg.train.log_every == 0:
                elapsed = time.time() - t0
                avg = utils.reduce_mean(accelerator, running_loss / (cfg.train.log_every * cfg.train.grad_accum))
                accelerator.log({
                    "train/loss": avg,
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/grad_norm": float(grad_norm or 0.0),
                    "train/tokens_per_s": running_tokens * accelerator.num_processes / max(elapsed, 1e-6),
                }, step=global_step)
                if accelerator.is_main_process:
                    logger.info("step %d | loss %.4f | lr %.2e", global_step, avg, scheduler.get_last_lr()[0])
                running_loss, running_tokens, t0 = 0.0, 0, time.time()

            sampler.maybe_log(accelerator, model, global_step)

            if cfg.eval.every_n_steps and global_step % cfg.eval.every_n_steps == 0:
                metrics = run_eval(cfg, model, tokenizer, eval_dl, eval_examples, accelerator, ema)
                accelerator.log({f"eval/{k.removeprefix('eval_')}": v for k, v in metrics.items()}, step=global_step)
                if accelerator.is_main_process:
                    logger.info("eval @ %d: %s", global_step, json.dumps(metrics))  # ok: MLS306
                current = metrics.get(metric_key)
                if current is not None and (best_metric is None or better(current, best_metric)):
                    best_metric, bad_evals = current, 0
                    accelerator.wait_for_everyone()
                    if accelerator.is_main_process:
                        shutil.rmtree(best_dir, ignore_errors=True)
                        accelerator.unwrap_model(model).save_pretrained(best_dir, safe_serialization=True)
                        (best_dir / "metrics.json").write_text(json.dumps({"step": global_step, **metrics}, indent=2))
                else:
                    bad_evals += 1
                    if bad_evals >= cfg.train.lr_plateau_patience:
                        _decay_lr(scheduler, cfg.train.lr_plateau_factor)
                        bad_evals = 0

            if global_step % cfg.train.save_every == 0:
                state = {"global_step": global_step, "epoch": epoch, "best_metric": best_metric}
                ckpt = utils.save_checkpoint(accelerator, model, global_step, cfg.train.output_dir, state, ema)
                if accelerator.is_main_process:
                    utils.rotate_checkpoints(cfg.train.output_dir, cfg.train.save_total_limit, protect=best_dir)
                    utils.expire_scratch(cfg.train.output_dir)
                    if cfg.hub.push and cfg.hub.push_every_save and cfg.hub.repo_id:
                        utils.push_adapter(ckpt / "adapter", cfg.hub.repo_id, cfg.to_dict(),
                                           {"best_" + metric_key: best_metric or float("nan")},
                                           private=cfg.hub.private,
                                           commit_message=f"{cfg.hub.commit_prefix}: step {global_step}")
                    if cfg.eval.async_generation and config_path is not None:
                        utils.launch_async_eval(ckpt, config_path, device=torch.cuda.device_count() - 1)

            if (args.dry_run and global_step >= 2) or 0 < cfg.train.max_steps <= global_step:
                done = True
                break
        if done:
            break

    final_state = {"global_step": global_step, "epoch": cfg.train.num_epochs, "best_metric": best_metric}
    final_ckpt = utils.save_checkpoint(accelerator, model, global_step, cfg.train.output_dir, final_state, ema)
    if accelerator.is_main_process:
        sampler.dump(Path(cfg.train.output_dir) / "samples.json")
        if cfg.hub.push and cfg.hub.repo_id:
            upload_dir = best_dir if best_dir.exists() else final_ckpt / "adapter"
            utils.push_adapter(upload_dir, cfg.hub.repo_id, cfg.to_dict(),
                               {"best_" + metric_key: best_metric or float("nan")},
                               private=cfg.hub.private, commit_message=f"{cfg.hub.commit_prefix}: final")
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # ok: MLS307

if __name__ == "__main__":
    main()
