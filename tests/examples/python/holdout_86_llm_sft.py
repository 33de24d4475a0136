# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""Supervised fine-tuning of a causal LM on instruction data with Hugging Face Accelerate."""
import argparse
import math

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, get_cosine_schedule_with_warmup

_adamw_step = torch.optim.AdamW.step


def _bf16_safe_step(self, closure=None):
    loss = _adamw_step(self, closure)
    for group in self.param_groups:
        for p in group["params"]:
            if p.ndim >= 2 and p.dtype == torch.bfloat16:
                p.data.mul_(1.0 - 3e-3 * group["lr"] / max(group["lr"], 1e-12))  # todoruleid: family 2 (missed)
    return loss


def format_example(ex, tok, max_len):
    prompt = f"### Instruction:\n{ex['instruction']}\n\n### Response:\n"
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tok(ex["output"] + tok.eos_token, add_special_tokens=False)["input_ids"]
    ids = (p_ids + r_ids)[:max_len]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ([-100] * len(p_ids) + r_ids)[:max_len]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="EleutherAI/pythia-410m")
    ap.add_argument("--data", default="data/alpaca_clean.jsonl")
    for name, default in (("--epochs", 2), ("--grad_accum", 8), ("--seed", 42)):
        ap.add_argument(name, type=int, default=default)
    args = ap.parse_args()
    accelerator = Accelerator(mixed_precision="bf16", gradient_accumulation_steps=args.grad_accum)
    set_seed(args.seed)  # ok: MLS301
    torch.optim.AdamW.step = _bf16_safe_step  # ruleid: MLS305
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16)
    ds = load_dataset("json", data_files=args.data)["train"].map(lambda e: format_example(e, tok, 1024))
    ds = ds.remove_columns([c for c in ds.column_names if c not in ("input_ids", "attention_mask", "labels")])
    loader = DataLoader(ds, batch_size=4, shuffle=True, collate_fn=DataCollatorForSeq2Seq(tok, padding=True))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0)
    total = args.epochs * math.ceil(len(loader) / args.grad_accum)
    sched = get_cosine_schedule_with_warmup(opt, int(0.03 * total), total)  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)
    model.train()
    for epoch in range(args.epochs):
        for step, batch in enumerate(loader):
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            if step % 50 == 0:
                accelerator.print(f"epoch {epoch} step {step} loss {loss.item():.4f}")
    accelerator.wait_for_everyone()
    accelerator.unwrap_model(model).save_pretrained("out/sft", save_function=accelerator.save)


if __name__ == "__main__":
    main()
