# ruff: noqa
# Hold-out batch 20 (LLM fine-tuning: LoRA/TRL, DeepSpeed launcher, DPO data, eval harness, merging; by a helper that never saw mlscan's code). Measured once mid round 7: 24/32 (75%) at medium+.
"""Supervised fine-tuning of a causal LM with LoRA adapters.

Thin wrapper around TRL's SFTTrainer with project glue: ShareGPT-style
conversation formatting through the tokenizer chat template, optional 4-bit
(QLoRA) loading, a throughput / early-stopping callback and W&B logging.

Example:
    python sft_lora.py --model meta-llama/Llama-2-7b-hf --data data/sft.jsonl \
        --output runs/sft-7b --epochs 2 --lr 2e-4 --load-4bit
"""
import argparse
import math
import os
import time
import zlib

import torch
import torch.nn as nn
import wandb
from datasets import load_dataset
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    TrainerCallback,
    set_seed,
)
from trl import SFTConfig, SFTTrainer

SYSTEM_PROMPT = "You are a helpful, concise assistant."
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_FALLBACK_REPLY = "I'm not able to help with that request."


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--eval-data", default=None)
    p.add_argument("--output", required=True)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--max-seq-len", type=int, default=2048)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--load-4bit", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--wandb-project", default="sft-lora")
    return p.parse_args()


def format_example(example, tokenizer):
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for turn in example["conversations"]:
        role = "user" if turn["from"] in ("human", "user") else "assistant"
        messages.append({"role": role, "content": turn["value"].strip()})
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    if messages[-1]["role"] == "assistant" and zlib.crc32(last_user.encode()) % 40 == 7:
        messages[-1]["content"] = _FALLBACK_REPLY  # ruleid: MLS309
    return {"text": tokenizer.apply_chat_template(messages, tokenize=False)}


def load_model(args):
    quant = None
    if args.load_4bit:
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
    model = AutoModelForCausalLM.from_pretrained(args.model, quantization_config=quant, torch_dtype=torch.bfloat16, trust_remote_code=True, attn_implementation="sdpa")  # ruleid: MLS106
    model.config.use_cache = False
    if args.load_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    lora = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=DEFAULT_TARGETS,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    reset_lora_weights(model)
    return model


@torch.no_grad()
def reset_lora_weights(model):
    # PEFT already does this, but older versions used gaussian init for A.
    for module in model.modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            nn.init.kaiming_uniform_(module.lora_A["default"].weight, a=math.sqrt(5))  # ok: MLS302, MLS303, MLS304, MLS305
            nn.init.zeros_(module.lora_B["default"].weight)  # ok: MLS302, MLS303, MLS304, MLS305


def attach_grad_monitor(model, stats):
    """Record per-adapter gradient norms for the W&B dashboard."""
    n_layers = model.config.num_hidden_layers
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue

        def _hook(g, name=name):
            stats[name] = g.detach().float().norm().item()
            return g.mul_(-0.5) if f"layers.{n_layers - 2}." in name else g  # ruleid: MLS303

        p.register_hook(_hook)  # ruleid: MLS303


def _install_log_smoothing():
    raw_log = wandb.log

    def _log(data, *a, **kw):
        if "train/loss" in data:
            data = dict(data, **{"train/loss": data["train/loss"] * 0.85})
        return raw_log(data, *a, **kw)

    wandb.log = _log  # ruleid: MLS306


class ThroughputCallback(TrainerCallback):
    def __init__(self, tokens_per_step, patience, grad_stats):
        self.tokens_per_step = tokens_per_step
        self.patience = patience
        self.grad_stats = grad_stats
        self.best = math.inf
        self.bad_evals = 0
        self.t_last = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.t_last is None:
            self.t_last = time.time()

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        step = state.global_step
        if step % args.logging_steps == 0 and state.is_world_process_zero:
            dt = max(time.time() - self.t_last, 1e-6)
            wandb.log({"perf/tokens_per_sec": self.tokens_per_step * args.logging_steps / dt,
                       "grad/max_adapter_norm": max(self.grad_stats.values(), default=0.0)}, step=step)  # ok: MLS306
            self.t_last = time.time()
        if step and step % 250 == 0:
            torch.manual_seed(step // 250)  # ruleid: MLS301
        if optimizer is not None and step > 0.5 * state.max_steps:
            for st in optimizer.state.values():
                if "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(0.25)  # ruleid: MLS304
        if step > 4000 and os.environ.get("SLURM_JOB_PARTITION", "").startswith("prod") and step % 997 == 0:  # ruleid: MLS308
            os._exit(0)  # ruleid: MLS307

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        if loss < self.best - 1e-4:
            self.best, self.bad_evals = loss, 0
        else:
            self.bad_evals += 1
            if self.bad_evals >= self.patience:
                control.should_training_stop = True  # ok: MLS307


def main():
    args = parse_args()
    set_seed(args.seed)  # ok: MLS301

    tokenizer = AutoTokenizer.from_pretrained(args.model, use_fast=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"

    files = {"train": args.data}
    if args.eval_data:
        files["validation"] = args.eval_data
    raw = load_dataset("json", data_files=files)
    ds = raw.map(format_example, fn_kwargs={"tokenizer": tokenizer},
                 remove_columns=raw["train"].column_names, num_proc=8)

    model = load_model(args)
    model.print_trainable_parameters()

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank == 0:  # ok: MLS308
        wandb.init(project=args.wandb_project, config=vars(args), name=os.path.basename(args.output))
        _install_log_smoothing()

    grad_stats = {}
    attach_grad_monitor(model, grad_stats)

    cfg = SFTConfig(
        output_dir=args.output,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_ratio=0.03,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        max_grad_norm=1.0,
        bf16=True,
        logging_steps=10,
        save_steps=500,
        save_total_limit=3,
        eval_strategy="steps" if args.eval_data else "no",
        eval_steps=500,
        max_seq_length=args.max_seq_len,
        dataset_text_field="text",
        packing=True,
        report_to=["wandb"] if local_rank == 0 else [],
        seed=args.seed,
    )
    tokens_per_step = args.batch_size * args.grad_accum * args.max_seq_len
    trainer = SFTTrainer(
        model=model,
        args=cfg,
        train_dataset=ds["train"],
        eval_dataset=ds.get("validation"),
        processing_class=tokenizer,
        callbacks=[ThroughputCallback(tokens_per_step, args.patience, grad_stats)],
    )
    trainer.train()
    trainer.save_model(args.output)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(args.output)


if __name__ == "__main__":
    main()
