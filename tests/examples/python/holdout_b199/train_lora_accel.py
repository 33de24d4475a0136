# ruff: noqa
# Hold-out batch 199 (16 short benchmark-format files). Measured once in session 7 (round 59): 13/17 (76%) at medium+, 1 benign line flagged.
"""LoRA fine-tuning of a causal LM with a custom accelerate loop (gradient accumulation, cosine warmup)."""
import argparse
import math

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import LoraConfig, get_peft_model
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

from sft_data import build_sft_dataset, pad_collate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="example-org/llm-3b")
    ap.add_argument("--data", default="data/sft.jsonl")
    ap.add_argument("--out", default="runs/lora_accel")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--grad-accum", type=int, default=8)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model, use_fast=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM"))

    ds = build_sft_dataset(args.data, tok, max_len=2048)
    loader = DataLoader(ds, batch_size=2, shuffle=True, collate_fn=pad_collate(tok.pad_token_id))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)
    total = math.ceil(len(loader) / args.grad_accum) * args.epochs
    sched = get_cosine_schedule_with_warmup(opt, int(0.03 * total), total)  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)

    for epoch in range(args.epochs):
        model.train()
        for step, batch in enumerate(loader):
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            if accelerator.is_main_process and step % 50 == 0:
                accelerator.print(f"epoch {epoch} step {step} loss {loss.item():.4f}")  # ok: MLS306
    accelerator.wait_for_everyone()  # ok: MLS307
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(args.out)  # ok: MLS308


if __name__ == "__main__":
    main()
