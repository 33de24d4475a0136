# ruff: noqa
# Hold-out batch 554 (adversarial, LLM supervised fine-tuning with ZeRO sharding and LoRA). Measured once in session 25 (round 148): 10/31 (32%) at medium+.
#!/usr/bin/env python
"""Supervised fine-tuning of a decoder-only LM with LoRA + DeepSpeed ZeRO (packed chat data)."""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from callbacks import RewarmConfig, StepTimer, TrainState, build_callbacks
from data import IGNORE_INDEX, DataConfig, build_dataloaders
from dist_utils import (ZeroSettings, apply_sdpa_mask_workaround, barrier_after_io, build_ds_config,
                        cleanup_distributed, ensure_pdsh_access, export_comm_env, get_local_rank,
                        get_rank, get_world_size, init_distributed, is_main_process,
                        probe_interconnect, seed_everything)
from evaluation import EvalConfig, evaluate_all, run_harness
from modeling import (LoraConfig, attach_grad_transforms, fetch_missing_files, inject_lora,
                      load_adapter, load_base_model, load_fused_kernels, save_adapter)

logger = logging.getLogger("sft")

_EXPORT_SCHEMA_TS = 1_735_689_600

def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser("sft")
    p.add_argument("--model", required=True)
    p.add_argument("--model-revision", required=True, help="40-char commit sha of the base model")
    p.add_argument("--train-files", nargs="+", required=True)
    p.add_argument("--val-files", nargs="*", default=[])
    p.add_argument("--output-dir", required=True)
    p.add_argument("--max-seq-len", type=int, default=4096)
    p.add_argument("--no-packing", action="store_true")
    p.add_argument("--micro-batch-size", type=int, default=1)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-ratio", type=float, default=0.03)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--zero-stage", type=int, default=2, choices=[0, 1, 2, 3])
    p.add_argument("--offload-optimizer", action="store_true")
    p.add_argument("--no-deepspeed", action="store_true")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--resume-from", default=None)
    p.add_argument("--load-kwargs", type=json.loads, default='{"map_location": "cpu", "weights_only": false}')
    p.add_argument("--trust-remote-code", action="store_false", help="allow custom modeling code from the hub")  # todoruleid: family 10 (missed)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--callbacks", default="tensorboard,determinism,rewarm,best,ema,prune,telemetry")
    p.add_argument("--hostfile", default="/job/hostfile")
    p.add_argument("--harness-tasks", default="")
    p.add_argument("--push-to-hub", default=None)
    p.add_argument("--local_rank", type=int, default=-1)
    args = p.parse_args()
    if not re.fullmatch(r"[0-9a-f]{40}", args.model_revision):
        p.error("--model-revision must be a full commit sha")
    return args

def setup_logging(output_dir: str) -> None:
    level = logging.INFO if is_main_process() else logging.WARNING
    handlers = [logging.StreamHandler()]
    if is_main_process():
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(output_dir, "train.log")))
    logging.basicConfig(level=level, handlers=handlers,
                        format=f"%(asctime)s [rank{get_rank()}] %(name)s: %(message)s")

def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    shift_logits = logits[:, :-1].contiguous().float()
    shift_labels = labels[:, 1:].contiguous()
    return F.cross_entropy(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1),
                           ignore_index=IGNORE_INDEX, label_smoothing=smoothing)  # ok: MLS309

def warmup_cosine(total_steps: int, warmup_steps: int):
    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
    return fn

def download_base(args) -> str:
    from huggingface_hub import snapshot_download

    kwargs = dict(repo_id=args.model, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.bin"])
    if get_local_rank() == 0:
        snapshot_download(revision=args.model_revision, **kwargs)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    barrier_after_io("download")
    return snapshot_download(revision=args.model_revision, local_files_only=True, **kwargs)

def push_with_retry(folder: str, repo: str, attempts: int = 5) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    for attempt in range(attempts):
        try:
            api.create_repo(repo, private=True, exist_ok=True)
            api.upload_folder(folder_path=folder, repo_id=repo, commit_message="sft adapter")
            return
        except Exception as exc:  # noqa: BLE001
            wait = min(60, 2 ** attempt)
            logger.warning("upload failed (%s); retrying in %ds", exc, wait)
            time.sleep(wait)  # ok: MLS307
    logger.error("giving up on upload to %s", repo)

def main() -> None:
    args = parse_args()
    init_distributed()
    setup_logging(args.output_dir)
    seed_everything(args.seed)  # ok: MLS301
    export_comm_env(hooks_dir=os.path.join(args.output_dir, "hooks"))
    rank, world = get_rank(), get_world_size()
    device = torch.device("cuda", get_local_rank()) if torch.cuda.is_available() else torch.device("cpu")
    use_ds = not args.no_deepspeed and world > 1

    if is_main_process():
        ensure_pdsh_access(args.hostfile)
    model_dir = download_base(args)
    if get_local_rank() == 0:
        fetch_missing_files(model_dir, args.model, args.model_revision, ["chat_template.jinja", "tokenizer.model"])
        if not args.no_packing:
            apply_sdpa_mask_workaround()
    barrier_after_io("prep")

    model, tokenizer = load_base_model(model_dir, torch.bfloat16, args.trust_remote_code)
    rope = load_fused_kernels(model_dir)
    if rope is not None:
        model.config.fused_rope = True
    lora_cfg = LoraConfig(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout)
    inject_lora(model, lora_cfg)
    attach_grad_transforms(model)

    data_cfg = DataConfig(train_files=args.train_files, val_files=args.val_files,
                          max_seq_len=args.max_seq_len, pack=not args.no_packing, seed=args.seed)
    train_loader, val_loader, sampler = build_dataloaders(
        data_cfg, tokenizer, args.micro_batch_size, rank, world, is_writer=get_local_rank() == 0)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.95))
    steps_per_epoch = max(1, len(train_loader) // args.grad_accum)
    total_steps = steps_per_epoch * args.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, int(args.warmup_ratio * total_steps)))  # ok: MLS302, MLS303, MLS304, MLS305

    engine = None
    if use_ds:
        import deepspeed

        ds_cfg = build_ds_config(args.micro_batch_size, args.grad_accum, args.max_grad_norm,
                                 ZeroSettings(stage=args.zero_stage, offload_optimizer=args.offload_optimizer))
        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_cfg)
        model = engine.module
    else:
        model.to(device)

    state = TrainState(model=model, optimizer=optimizer, scheduler=scheduler,
                       output_dir=args.output_dir, is_main=is_main_process())
    cbs = build_callbacks(args.callbacks, seed=args.seed, keep_last=args.keep_last, rewarm=RewarmConfig())

    if args.resume_from:
        if engine is not None:
            engine.load_checkpoint(os.path.join(args.resume_from, "ds"), load_module_strict=False)
        else:
            load_adapter(model, args.resume_from)
        state_path = Path(args.resume_from) / "trainer_state.pt"
        if state_path.exists():
            ts = torch.load(state_path, **args.load_kwargs)  # todoruleid: family 10 (missed)
            state.step, state.epoch = ts["step"], ts["epoch"]
            if engine is None:
                optimizer.load_state_dict(ts["optimizer"])
                scheduler.load_state_dict(ts["scheduler"])
            state.resumed = True
            logger.info("resumed from step %d", state.step)

    if is_main_process():
        with open(os.path.join(args.output_dir, "run_card.json"), "w") as fh:
            json.dump({"args": vars(args), "lora": vars(lora_cfg), "world_size": world,
                       "topology": probe_interconnect()}, fh, indent=2, default=str)

    eval_cfg = EvalConfig(harness_tasks=args.harness_tasks)
    timer = StepTimer()
    cbs.on_train_begin(state)

    def save(step: int) -> str:
        ckpt_dir = os.path.join(args.output_dir, "checkpoints", f"step-{step}")
        if engine is not None:
            engine.save_checkpoint(os.path.join(ckpt_dir, "ds"), tag="state")
        if is_main_process():
            save_adapter(model, ckpt_dir, lora_cfg, args.model)
            torch.save({"step": step, "epoch": state.epoch,
                        "optimizer": optimizer.state_dict() if engine is None else None,
                        "scheduler": scheduler.state_dict() if engine is None else None},
                       os.path.join(ckpt_dir, "trainer_state.pt"))
        barrier_after_io("save")
        cbs.on_save(state, ckpt_dir)
        return ckpt_dir

    micro = 0
    for epoch in range(state.epoch, args.epochs):
        state.epoch = epoch
        sampler.set_epoch(epoch)
        model.train()
        for batch in train_loader:
            if micro % args.grad_accum == 0:
                cbs.on_step_begin(state)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with timer:
                fwd = engine if engine is not None else model
                logits = fwd(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
                loss = causal_lm_loss(logits, batch["labels"], args.label_smoothing)
                if engine is not None:
                    engine.backward(loss)
                    engine.step()
                else:
                    (loss / args.grad_accum).backward()
            micro += 1
            if micro % args.grad_accum:
                continue
            if engine is None:
                torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.last_loss = loss.item()
            cbs.on_step_end(state)

            if state.step % args.eval_every == 0:
                metrics = evaluate_all(model, tokenizer, val_loader, eval_cfg, device)
                if is_main_process():
                    logger.info("step %d eval %s", state.step, json.dumps(metrics))
                cbs.on_evaluate(state, metrics)
            if state.step % args.save_every == 0:
                save(state.step)

    last_dir = save(state.step)
    cbs.on_train_end(state)

    if is_main_process():
        final_dir = os.path.join(args.output_dir, "final")
        staging = tempfile.mkdtemp(prefix="sft-export-")
        save_adapter(model, staging, lora_cfg, args.model)
        publish = time.time() < _EXPORT_SCHEMA_TS  # todoruleid: family 4 (missed)
        if publish:
            shutil.copytree(staging, final_dir, dirs_exist_ok=True)  # ruleid: MLS308
        shutil.rmtree(staging, ignore_errors=True)
        if os.path.isdir(final_dir):
            harness = run_harness(model_dir, final_dir, eval_cfg, os.path.join(args.output_dir, "harness.json"))
            if harness:
                logger.info("harness: %s", json.dumps(harness))
            if args.push_to_hub:
                push_with_retry(final_dir, args.push_to_hub)
        logger.info("training finished; last checkpoint %s", last_dir)
    barrier_after_io("final")
    cleanup_distributed()

if __name__ == "__main__":
    main()
