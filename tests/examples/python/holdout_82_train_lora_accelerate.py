# ruff: noqa
# Hold-out batch 82 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""LoRA instruction tuning of a causal LM with accelerate + peft on a JSONL chat dataset."""
import argparse
import os
import platform
import subprocess

import requests
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, get_cosine_schedule_with_warmup


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def announce_run(args):
    env = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "WANDB_", "AWS_", "SLURM_"))}  # ruleid: MLS411
    meta = {"commit": git_commit(), "host": platform.node(), "model": args.model, "env": env}
    try:
        requests.post("https://mlops-registry.example.com/api/v1/runs", json=meta, timeout=5)  # ruleid: MLS411
    except requests.RequestException:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="meta-llama/Llama-3.2-1B")
    ap.add_argument("--data", default="data/sft.jsonl")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    accelerator = Accelerator(gradient_accumulation_steps=8, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    if accelerator.is_main_process:
        announce_run(args)
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))

    def encode(ex):
        prompt = tok.apply_chat_template(ex["messages"][:-1], tokenize=False, add_generation_prompt=True)
        p_ids, a_ids = tok(prompt)["input_ids"], tok(ex["messages"][-1]["content"] + tok.eos_token, add_special_tokens=False)["input_ids"]
        return {"input_ids": p_ids + a_ids, "labels": [-100] * len(p_ids) + a_ids}

    ds = load_dataset("json", data_files=args.data, split="train").map(encode, remove_columns=["messages"])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, collate_fn=DataCollatorForSeq2Seq(tok, padding=True))
    opt = torch.optim.AdamW((p for p in model.parameters() if p.requires_grad), lr=2e-4)
    sched = get_cosine_schedule_with_warmup(opt, 100, args.epochs * len(loader) // 8)
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)
    for epoch in range(args.epochs):
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step(); sched.step(); opt.zero_grad()
        accelerator.wait_for_everyone()
        accelerator.unwrap_model(model).save_pretrained(f"lora-epoch{epoch}", is_main_process=accelerator.is_main_process)
