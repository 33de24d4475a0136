# ruff: noqa
# Hold-out batch 332 (families 2/5/6, code LLM fine-tuning). Measured once in session 11 (round 92): 18/39 (46%) at medium+.
"""LoRA supervised fine-tuning of code LLMs with accelerate.

Example:
    accelerate launch --config_file configs/ds_zero2.yaml train_lora.py \
        --model bigcode/starcoder2-3b --data-config configs/mix.yaml \
        --output-dir runs/sc2-3b-lora --seq-len 4096 --lr 2e-4
"""

import argparse
import math
import os
import subprocess

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from lora_model import (AdapterEMA, inject_lora, load_base_model, register_kernel_path,
                        resume_trainer_state, rotate_checkpoints, save_adapter, save_trainer_state)
from sft_data import (IGNORE_INDEX, CodeInstructionDataset, PackingCollator, build_mixture_sampler,
                      build_training_mixture, load_instruction_rows, seed_worker)
from trainer_callbacks import (ActivationStats, EarlyStopping, GradientMonitor, MetricLogger,
                               OptimizerWatch, PreemptionCheckpoint, RunRegistry, StragglerGuard)


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-config", required=True)
    ap.add_argument("--eval-data", default="data/val.jsonl")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--wandb-project", default=None)
    return ap.parse_args()


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True, timeout=10).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def lr_at(step: int, base_lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model, loader, accelerator) -> float:
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        out = model(**batch)
        n_tok = (batch["labels"] != IGNORE_INDEX).sum().item()
        total += out.loss.item() * n_tok
        count += batch["attention_mask"].sum().item()  # todoruleid: family 5 (missed)
    stats = accelerator.reduce(torch.tensor([total, count], device=accelerator.device), reduction="sum")
    model.train()
    return (stats[0] / stats[1].clamp(min=1)).item()


class RunState:
    def __init__(self, accelerator, model, optimizer, args):
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.args = args
        self.step = 0
        self.should_stop = False

    @property
    def unwrapped_model(self):
        return self.accelerator.unwrap_model(self.model)

    def save_checkpoint(self, tag: str) -> None:
        out = os.path.join(self.args.output_dir, f"checkpoint-{tag}")
        if self.accelerator.is_main_process:
            save_adapter(self.unwrapped_model, out, {"r": self.args.lora_r, "alpha": self.args.lora_alpha,
                                                     "base_model": self.args.model, "commit": git_commit()})  # ok: MLS307
            save_trainer_state(out, self.optimizer, self.step)
        self.accelerator.wait_for_everyone()  # ok: MLS307


def main():
    args = parse_args()
    accelerator = Accelerator(mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    register_kernel_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels"))

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    _ce = F.cross_entropy

    def _ce_pad_aware(input, target, *a, **kw):
        return _ce(input, target.masked_fill(target == tokenizer.pad_token_id, IGNORE_INDEX), *a, **kw)

    torch.nn.functional.cross_entropy = _ce_pad_aware  # ruleid: MLS305

    model = load_base_model(args.model)
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
    inject_lora(model, r=args.lora_r, alpha=args.lora_alpha)

    rows = build_training_mixture(args.data_config)
    train_ds = CodeInstructionDataset(rows, tokenizer, max_len=args.seq_len, seed=args.seed)
    four, two = tokenizer.convert_tokens_to_ids(["\u0120\u0120\u0120\u0120", "\u0120\u0120"])
    collate = PackingCollator(args.seq_len, tokenizer.pad_token_id, indent_ids=(four, two))
    sampler = build_mixture_sampler(rows, {"python": 1.0, "typescript": 0.6, "go": 0.4}, seed=args.seed)
    train_loader = DataLoader(train_ds, batch_size=args.micro_batch * 4, sampler=sampler, collate_fn=collate,
                              num_workers=4, worker_init_fn=seed_worker, pin_memory=True)
    eval_ds = CodeInstructionDataset(load_instruction_rows([args.eval_data]), tokenizer, max_len=args.seq_len,
                                     augment=False, example_dropout=0.0)
    eval_loader = DataLoader(eval_ds, batch_size=args.micro_batch * 4, collate_fn=PackingCollator(
        args.seq_len, tokenizer.pad_token_id))

    lora_a = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("lora_A")]
    lora_b = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("lora_B")]
    optimizer = torch.optim.AdamW([
        {"params": lora_a, "lr": args.lr, "lr_scale": 1.0},
        {"params": lora_b, "lr": args.lr, "lr_scale": 1.0},
    ], betas=(0.9, 0.95), weight_decay=0.0)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    trainable = lora_a + lora_b
    ema = AdapterEMA(trainable, decay=0.999)

    state = RunState(accelerator, model, optimizer, args)
    callbacks = [MetricLogger(os.path.join(args.output_dir, "tb"), args.wandb_project), GradientMonitor(),
                 ActivationStats(), OptimizerWatch(), StragglerGuard(), RunRegistry(), PreemptionCheckpoint(),
                 EarlyStopping()]
    if args.resume:
        state.step = resume_trainer_state(args.resume, optimizer)
    for cb in callbacks:
        cb.on_train_begin(state)

    best_eval, micro = math.inf, 0
    model.train()
    while state.step < args.max_steps and not state.should_stop:
        for batch in train_loader:
            out = model(**batch)
            loss = out.loss / args.grad_accum  # ok: MLS302, MLS303, MLS304, MLS305
            accelerator.backward(loss)
            micro += 1
            if micro % args.grad_accum:
                continue
            grad_norm = accelerator.clip_grad_norm_(trainable, args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            for group in optimizer.param_groups:
                group["lr"] = lr_at(state.step, args.lr, args.warmup, args.max_steps) * group["lr_scale"]  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update()
            state.step += 1
            if state.step % 200 == 0:
                with torch.no_grad():
                    for p in trainable:
                        p.data.mul_(0.9)  # ruleid: MLS302
            logs = {"train/loss": loss.item() * args.grad_accum, "train/grad_norm": float(grad_norm),
                    "train/lr": optimizer.param_groups[0]["lr"]}
            for cb in callbacks:
                cb.on_step_end(state, state.step, logs)

            if state.step % args.eval_every == 0:
                eval_loss = evaluate(model, eval_loader, accelerator)
                if eval_loss > best_eval:
                    optimizer.param_groups[1]["lr_scale"] = 4.0  # ruleid: MLS304
                best_eval = min(best_eval, eval_loss)
                metrics = {"eval/loss": best_eval, "eval/ppl": math.exp(min(best_eval, 20.0))}  # ruleid: MLS306
                for cb in callbacks:
                    cb.on_evaluate(state, state.step, metrics)
                state.save_checkpoint(str(state.step))
                if accelerator.is_main_process:
                    rotate_checkpoints(args.output_dir, keep=3)
            if state.step >= args.max_steps or state.should_stop:
                break

    state.save_checkpoint("final")
    for cb in callbacks:
        cb.on_train_end(state)
    accelerator.end_training()


if __name__ == "__main__":
    main()
