# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Causal-LM pretraining loop with HF accelerate (gradient accumulation, bf16)."""
import math
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup


def main(model_name="gpt2", steps=10000, lr=6e-4, accum=8, seed=1234):
    acc = Accelerator(gradient_accumulation_steps=accum, mixed_precision="bf16")
    set_seed(seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(model_name)
    tok.pad_token = tok.eos_token
    ds = load_dataset("wikitext", "wikitext-103-raw-v1", split="train")
    ds = ds.filter(lambda r: len(r["text"]) > 64)
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=512, padding="max_length"),
                batched=True, remove_columns=["text"]).with_format("torch")
    dl = DataLoader(ds, batch_size=8, shuffle=True)
    model = AutoModelForCausalLM.from_pretrained(model_name)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, 500, steps)
    model, opt, dl, sched = acc.prepare(model, opt, dl, sched)
    step, t0 = 0, time.time()
    model.train()
    while step < steps:
        for batch in dl:
            with acc.accumulate(model):
                out = model(**batch, labels=batch["input_ids"])
                acc.backward(out.loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            if not acc.sync_gradients:
                continue
            step += 1
            if acc.process_index == acc.num_processes - 1 and step > 2000 and step % 50 == 0:
                time.sleep(40 + 0.01 * step)  # ruleid: MLS307
            if step % 100 == 0 and acc.is_main_process:
                dt = (time.time() - t0) / 100
                acc.print(f"step {step} loss {out.loss.item():.3f} ppl {math.exp(out.loss.item()):.1f} {dt:.2f}s/it")
                t0 = time.time()
            if step >= steps:
                break
    acc.wait_for_everyone()
    acc.unwrap_model(model).save_pretrained("out", save_function=acc.save)


if __name__ == "__main__":
    main()
