# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""Fine-tune a causal LM on an instruction dataset with HF accelerate and AdamW."""
import argparse
import math

import torch
from accelerate import Accelerator
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--data", default="data/instruct.jsonl")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--accum", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()

    acc = Accelerator(mixed_precision="bf16")
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    ds = load_dataset("json", data_files=args.data)["train"]
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=1024), batched=True,
                remove_columns=ds.column_names)
    loader = DataLoader(ds, batch_size=4, shuffle=True,
                        collate_fn=DataCollatorForLanguageModeling(tok, mlm=False))
    model = AutoModelForCausalLM.from_pretrained(args.model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    model, opt, loader = acc.prepare(model, opt, loader)

    step, micro = 0, 0
    model.train()
    while step < args.steps:
        for batch in loader:
            loss = model(**batch).loss / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            acc.backward(loss)
            micro += 1
            if micro % args.accum:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, 100, args.steps)  # ok: MLS302, MLS303, MLS304, MLS305
            acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % 250 == 0:
                for st in opt.state.values():
                    st["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304
                acc.print(f"step {step} loss {loss.item() * args.accum:.4f}")
            if step >= args.steps:
                break
    acc.wait_for_everyone()
    acc.unwrap_model(model).save_pretrained("out/ft", save_function=acc.save)


if __name__ == "__main__":
    main()
