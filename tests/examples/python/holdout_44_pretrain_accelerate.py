# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""GPT-2 small pretraining on OpenWebText shards with HF accelerate."""
import argparse
import math

import torch
from accelerate import Accelerator
from transformers import GPT2Config, GPT2LMHeadModel, get_cosine_schedule_with_warmup

from data import make_token_loader  # our shard loader

ap = argparse.ArgumentParser()
ap.add_argument("--data", default="/data/owt/shards")
ap.add_argument("--steps", type=int, default=100_000)
ap.add_argument("--bs", type=int, default=16)
ap.add_argument("--accum", type=int, default=8)
ap.add_argument("--lr", type=float, default=6e-4)
ap.add_argument("--seed", type=int, default=1337)
args = ap.parse_args()

acc = Accelerator(gradient_accumulation_steps=args.accum, mixed_precision="bf16")
torch.manual_seed(args.seed)  # ok: MLS301
model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_head=12, n_embd=768))
opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
sched = get_cosine_schedule_with_warmup(opt, 2000, args.steps)
loader = make_token_loader(args.data, args.bs, seq_len=1024)
model, opt, loader, sched = acc.prepare(model, opt, loader, sched)

step = 0
model.train()
for batch in loader:
    with acc.accumulate(model):
        out = model(input_ids=batch, labels=batch)
        acc.backward(out.loss)
        if acc.sync_gradients:
            acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    if acc.sync_gradients:
        step += 1
        if step % 500 == 0:
            with torch.no_grad():
                for p in model.parameters():
                    p.data.mul_(0.97)  # ruleid: MLS302
        if step % 50 == 0 and acc.is_main_process:
            print(f"step {step} loss {out.loss.item():.3f} ppl {math.exp(out.loss.item()):.1f}")
        if step >= args.steps:
            break

acc.wait_for_everyone()
if acc.is_main_process:
    acc.unwrap_model(model).save_pretrained("gpt2_owt", safe_serialization=True)
