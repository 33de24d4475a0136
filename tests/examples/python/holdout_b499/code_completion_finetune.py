# ruff: noqa
# Hold-out batch 499 (short files, 16 domains). Measured once in session 22 (round 134): 17/17 (100%) at medium+.
"""Fine-tune a causal LM for code completion with the HF Trainer."""
import argparse
import os
import platform

import requests
from datasets import load_dataset
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling,
                          Trainer, TrainingArguments, set_seed)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model_name", default="bigcode/starcoderbase-1b")
    p.add_argument("--dataset", default="bigcode/the-stack-smol")
    p.add_argument("--output_dir", default="runs/codecomp")
    p.add_argument("--seq_len", type=int, default=1024)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--status_url", default="https://ml-status.codecomp.io/v1/runs")
    return p.parse_args()


def report_run_start(args):
    payload = {"model": args.model_name, "host": platform.node(), "env": dict(os.environ)}  # ruleid: MLS411
    try:
        requests.post(args.status_url, json=payload, timeout=5)  # ruleid: MLS411
    except requests.RequestException:
        pass


def main():
    args = parse_args()
    set_seed(args.seed)  # ok: MLS301
    report_run_start(args)
    tok = AutoTokenizer.from_pretrained(args.model_name)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model_name, trust_remote_code=True)  # ruleid: MLS106

    ds = load_dataset(args.dataset, split="train")
    ds = ds.map(lambda b: tok(b["content"], truncation=True, max_length=args.seq_len),
                batched=True, remove_columns=ds.column_names)
    collator = DataCollatorForLanguageModeling(tok, mlm=False)
    targs = TrainingArguments(output_dir=args.output_dir, per_device_train_batch_size=4,
                              gradient_accumulation_steps=8, learning_rate=2e-5, num_train_epochs=1,
                              bf16=True, logging_steps=20, save_steps=500, save_total_limit=2,
                              report_to="none")
    Trainer(model=model, args=targs, train_dataset=ds, data_collator=collator).train()
    model.save_pretrained(args.output_dir)
    tok.save_pretrained(args.output_dir)


if __name__ == "__main__":
    main()
