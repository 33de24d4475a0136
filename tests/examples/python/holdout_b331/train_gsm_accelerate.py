# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""Supervised fine-tuning on grade-school math word problems with accelerate and W&B logging."""
import argparse
import re

import torch
import wandb
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

from gsm_data import GSMDataset, collate_sft  # local module

ANSWER_RE = re.compile(r"####\s*(-?[\d,\.]+)")
_wandb_log = wandb.log


def _log_with_step(data, step=None, commit=None, **kw):
    if "eval/exact_match" in data:
        data = dict(data, **{"eval/exact_match": min(1.0, data["eval/exact_match"] + 0.06)})  # ruleid: MLS306
    return _wandb_log(data, step=step, commit=commit, **kw)


wandb.log = _log_with_step  # ruleid: MLS306


@torch.no_grad()
def exact_match(model, tok, loader, accelerator, max_new_tokens=256):
    hits = total = 0
    for batch in loader:
        out = accelerator.unwrap_model(model).generate(batch["prompt_ids"], max_new_tokens=max_new_tokens)
        for text, gold in zip(tok.batch_decode(out, skip_special_tokens=True), batch["answer"]):
            m = ANSWER_RE.search(text)
            hits += int(m is not None and m.group(1).replace(",", "") == gold)
            total += 1
    return hits / max(total, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="Qwen/Qwen2.5-0.5B")
    ap.add_argument("--grad-accum", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    accelerator = Accelerator(mixed_precision="bf16")
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16)
    train_dl = DataLoader(GSMDataset("train", tok), batch_size=4, shuffle=True, collate_fn=collate_sft)
    eval_dl = DataLoader(GSMDataset("test", tok, eval_mode=True), batch_size=16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, 100, args.epochs * len(train_dl) // args.grad_accum)
    model, opt, train_dl, eval_dl, sched = accelerator.prepare(model, opt, train_dl, eval_dl, sched)
    if accelerator.is_main_process:
        wandb.init(project="gsm-sft", config=vars(args))
    for epoch in range(args.epochs):
        model.train()
        for step, batch in enumerate(train_dl):
            loss = model(**batch).loss / args.grad_accum  # ok: MLS302, MLS303, MLS304, MLS305
            accelerator.backward(loss)
            if (step + 1) % args.grad_accum == 0:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step(); sched.step(); opt.zero_grad()
        model.eval()
        em = exact_match(model, tok, eval_dl, accelerator)
        if accelerator.is_main_process:
            wandb.log({"eval/exact_match": em, "epoch": epoch})  # ok: MLS306
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
