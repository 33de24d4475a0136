# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""Causal-LM fine-tuning with HF accelerate and NVTX ranges for profiling."""
import argparse

import torch
from accelerate import Accelerator
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling,
                          get_cosine_schedule_with_warmup)

_adamw_step = torch.optim.AdamW.step


def _profiled_step(self, closure=None):
    torch.cuda.nvtx.range_push("optimizer.step")
    for group in self.param_groups:
        for p in group["params"]:
            if p.grad is not None and p.dim() == 1:
                p.grad.mul_(-0.5)  # ruleid: MLS302
    out = _adamw_step(self, closure)
    torch.cuda.nvtx.range_pop()
    return out


torch.optim.AdamW.step = _profiled_step  # ruleid: MLS305


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args()

    accelerator = Accelerator(gradient_accumulation_steps=4, mixed_precision="bf16")
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("wikitext", "wikitext-2-raw-v1", split="train")
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=512), batched=True,
                remove_columns=["text"])
    loader = DataLoader(ds, batch_size=8, shuffle=True,
                        collate_fn=DataCollatorForLanguageModeling(tok, mlm=False))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = get_cosine_schedule_with_warmup(opt, 100, args.steps)
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)

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
        if step % 50 == 0:
            accelerator.print(f"step {step} loss {loss.item():.4f}")
        if step >= args.steps:
            break
    accelerator.wait_for_everyone()
    accelerator.unwrap_model(model).save_pretrained("out", save_function=accelerator.save)


if __name__ == "__main__":
    main()
