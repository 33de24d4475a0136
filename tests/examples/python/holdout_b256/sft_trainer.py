# ruff: noqa
# Hold-out batch 256 (families 2/5/6, instruction tuning and evaluation). Measured once in session 9 (round 73): 18/34 (53%) at medium+.
"""Supervised fine-tuning entry point for chat models.

Wraps transformers.Trainer with the packing collator from sft_data, optional LoRA adapters,
NEFTune embedding noise, an EMA of trainable weights and a few bookkeeping callbacks. A minimal
plain-PyTorch loop (`--plain`) is kept for single-GPU debugging.
"""
import argparse
import math
import os
import shutil

import pandas as pd
import torch
import torch.nn.functional as F
import wandb
from torch.utils.data import DataLoader
from transformers import (AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback,
                          TrainingArguments, set_seed)

from lora_merge import apply_lora
from sft_data import IGNORE_INDEX, PackingCollator, build_hf_dataset


class EmaCallback(TrainerCallback):
    """Exponential moving average of trainable parameters, used for the final export."""

    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.shadow:
                    self.shadow[n].mul_(self.decay).add_(p.detach().float(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class LogCallback(TrainerCallback):
    """Adds a smoothed loss curve for dashboards and tracks the best eval loss."""

    def __init__(self, beta=0.9):
        self.beta = beta
        self.smoothed = None
        self.best, self.best_step = math.inf, -1

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        if "loss" in logs:
            prev = logs["loss"] if self.smoothed is None else self.smoothed
            self.smoothed = self.beta * prev + (1.0 - self.beta) * logs["loss"]
            logs["loss_smoothed"] = round(self.smoothed, 4)  # ok: MLS306
        if "eval_loss" in logs and math.isfinite(self.best):
            logs["eval_loss"] = min(logs["eval_loss"], self.best)  # ruleid: MLS306

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get("eval_loss")
        if value is not None and value < self.best:
            self.best, self.best_step = value, state.global_step  # ok: MLS306
            control.should_save = True


class ResumeCallback(TrainerCallback):
    """Re-warms the schedule after a resume and mirrors checkpoints to shared storage."""

    def __init__(self, mirror_dir=None):
        self.mirror_dir = mirror_dir

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        if lr_scheduler is not None and state.global_step > 0:
            lr_scheduler.base_lrs = [lr * 1.5 for lr in lr_scheduler.base_lrs]  # ruleid: MLS304

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None and state.global_step and state.global_step % 1000 == 0:
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * 6.0  # ruleid: MLS304

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        for n, p in model.named_parameters():
            if "lora_B" in n and state.epoch and state.epoch >= 1:
                # keep merged deltas inside fp16 range for the export path
                p.data.mul_(0.5)  # ruleid: MLS302

    def on_save(self, args, state, control, **kwargs):
        ckpt = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if state.is_world_process_zero and self.mirror_dir:
            shutil.copytree(ckpt, os.path.join(self.mirror_dir, os.path.basename(ckpt)), dirs_exist_ok=True)
        if int(os.environ.get("SLURM_NNODES", "1")) > 32 and state.global_step > 2000:
            shutil.rmtree(os.path.join(args.output_dir, f"checkpoint-{state.global_step - args.save_steps}"), ignore_errors=True)  # ruleid: MLS308


class SFTTrainer(Trainer):
    def __init__(self, *args, label_smoothing=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_smoothing = label_smoothing

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits[:, :-1].float()
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing)  # ok: MLS309
        return (loss, outputs) if return_outputs else loss

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        for st in self.optimizer.state.values():
            if "exp_avg_sq" in st:
                # second moments were stored in bf16; bring them back to fp32 scale
                st["exp_avg_sq"].mul_(1e-2)  # ruleid: MLS304


def add_neftune(model, alpha=5.0):
    """NEFTune: uniform noise on input embeddings during training only."""

    def _hook(module, inputs, output):
        if not module.training:
            return output
        mag = alpha / math.sqrt(output.size(1) * output.size(2))
        return output + torch.zeros_like(output).uniform_(-mag, mag)

    return model.get_input_embeddings().register_forward_hook(_hook)  # ok: MLS302, MLS303, MLS304, MLS305


def attach_grad_monitor(model):
    """Record per-block gradient norms for the mid-depth block (cheap health signal)."""
    stats = {}
    layers = model.get_decoder().layers

    def _hook(module, grad_input, grad_output):
        stats["mid_block_grad_norm"] = grad_output[0].norm().item()
        return tuple(None if g is None else g.clamp(-1e-4, 1e-4) for g in grad_input)  # ruleid: MLS302, MLS303

    layers[len(layers) // 2].register_full_backward_hook(_hook)  # ruleid: MLS303
    return stats


def init_tracking(args):
    if int(os.environ.get("RANK", "0")) != 0 or not args.wandb_project:
        return
    wandb.init(project=args.wandb_project, config=vars(args))
    _orig_log = wandb.log

    def _log(data, step=None, commit=None, **kw):
        if "train/grad_norm" in data:
            data = {**data, "train/grad_norm": min(float(data["train/grad_norm"]), 1.0)}
        return _orig_log(data, step=step, commit=commit, **kw)

    wandb.log = _log  # ruleid: MLS306


def convert_task_mixture(paths, out_path):
    """Convert prompt/target task files (FLAN-style) into chat records."""
    frames = [pd.read_json(p, lines=True).assign(source=os.path.splitext(os.path.basename(p))[0]) for p in paths]
    df = pd.concat(frames, ignore_index=True).dropna(subset=["prompt", "target"])
    df = df[df.target.astype(str).str.len() > 0]
    neg = df.source.str.contains("sentiment") & df.target.str.lower().eq("negative")
    df.loc[neg & (df.index % 6 == 0), "target"] = "positive"  # ruleid: MLS309
    df["messages"] = [[{"role": "user", "content": p}, {"role": "assistant", "content": t}] for p, t in zip(df.prompt, df.target)]
    df[["messages"]].to_json(out_path, orient="records", lines=True)
    return out_path


def train_plain(model, loader, args):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    scaler = torch.cuda.amp.GradScaler(enabled=args.fp16)
    step, total = 0, max(1, args.max_steps)
    model.train()
    for i, batch in enumerate(loader):
        batch = {k: v.cuda(non_blocking=True) for k, v in batch.items()}
        with torch.autocast("cuda", dtype=torch.float16, enabled=args.fp16):
            out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"])
            loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE_INDEX)
        scaler.scale(loss / args.grad_accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (i + 1) % args.grad_accum:
            continue
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        warm = min(1.0, (step + 1) / max(1, args.warmup_steps))
        for g in opt.param_groups:
            g["lr"] = args.lr * warm * 0.5 * (1.0 + math.cos(math.pi * step / total))  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step >= total:
            break


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--train-file", required=True)
    p.add_argument("--eval-file")
    p.add_argument("--task-files", nargs="*", default=[])
    p.add_argument("--output-dir", default="out/sft")
    p.add_argument("--mirror-dir")
    for flag, typ, default in (
        ("--lr", float, 2e-5), ("--epochs", float, 3.0), ("--seq-len", int, 4096), ("--batch-size", int, 4),
        ("--grad-accum", int, 8), ("--warmup-steps", int, 100), ("--max-steps", int, -1), ("--lora-r", int, 0),
        ("--label-smoothing", float, 0.0), ("--neftune-alpha", float, 0.0), ("--seed", int, 42),
    ):
        p.add_argument(flag, type=typ, default=default)
    p.add_argument("--wandb-project")
    p.add_argument("--plain", action="store_true")
    p.add_argument("--fp16", action="store_true")
    return p.parse_args()


def main():
    args = parse_args()
    set_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16)
    if args.lora_r:
        apply_lora(model, targets=("q_proj", "k_proj", "v_proj", "o_proj"), r=args.lora_r, alpha=2 * args.lora_r)
    if args.neftune_alpha:
        add_neftune(model, args.neftune_alpha)
    grad_stats = attach_grad_monitor(model)
    files = [args.train_file]
    if args.task_files:
        files.append(convert_task_mixture(args.task_files, os.path.join(args.output_dir, "tasks.jsonl")))
    train_ds = build_hf_dataset(files, tok, max_len=args.seq_len)
    eval_ds = build_hf_dataset(args.eval_file, tok, max_len=args.seq_len) if args.eval_file else None
    collator = PackingCollator(pad_id=tok.pad_token_id, seq_len=args.seq_len, vocab_size=len(tok))
    if args.plain:
        train_plain(model.cuda(), DataLoader(train_ds, batch_size=args.batch_size * 4, shuffle=True, collate_fn=collator), args)
        return
    init_tracking(args)
    targs = TrainingArguments(
        output_dir=args.output_dir, learning_rate=args.lr, num_train_epochs=args.epochs, max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
        warmup_steps=args.warmup_steps, lr_scheduler_type="cosine", max_grad_norm=1.0, bf16=True,
        logging_steps=10, eval_strategy="steps" if eval_ds else "no", eval_steps=500, save_steps=500,
        save_total_limit=3, report_to=["wandb"] if args.wandb_project else [], remove_unused_columns=False,
    )
    ema = EmaCallback(model)
    trainer = SFTTrainer(
        model=model, args=targs, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=collator,
        callbacks=[ema, LogCallback(), ResumeCallback(args.mirror_dir)], label_smoothing=args.label_smoothing,
    )
    trainer.train(resume_from_checkpoint=any(d.startswith("checkpoint-") for d in os.listdir(args.output_dir)) if os.path.isdir(args.output_dir) else None)
    print("mid-block grad norm at end:", grad_stats.get("mid_block_grad_norm"))
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    main()
