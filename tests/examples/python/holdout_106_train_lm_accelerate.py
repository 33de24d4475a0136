# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""Causal LM fine-tuning with HF accelerate (gradient accumulation, cosine warmup)."""
import argparse
import math

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling,
                          get_cosine_schedule_with_warmup)


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="runs/lm")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--bs", type=int, default=8)
    ap.add_argument("--accum", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--log-every", type=int, default=20)
    return ap.parse_args()


def main():
    args = parse()
    accelerator = Accelerator(gradient_accumulation_steps=args.accum, log_with="tensorboard", project_dir=args.out)
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("text", data_files=args.data, split="train")
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=args.seq), batched=True, remove_columns=["text"])
    collate = DataCollatorForLanguageModeling(tok, mlm=False)
    loader = DataLoader(ds, batch_size=args.bs, shuffle=True, collate_fn=collate)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    steps = math.ceil(len(loader) / args.accum) * args.epochs
    sched = get_cosine_schedule_with_warmup(opt, int(0.03 * steps), steps)  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)
    accelerator.init_trackers("lm")
    step = 0
    for epoch in range(args.epochs):
        model.train()
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            if accelerator.sync_gradients:
                step += 1
                if step % args.log_every == 0:
                    accelerator.log({"train/loss": loss.item(), "lr": sched.get_last_lr()[0]}, step=step)  # ok: MLS306
        accelerator.wait_for_everyone()  # ok: MLS307
        if accelerator.is_main_process:  # ok: MLS308
            accelerator.unwrap_model(model).save_pretrained(f"{args.out}/epoch{epoch}", safe_serialization=True)
    accelerator.end_training()


if __name__ == "__main__":
    main()
