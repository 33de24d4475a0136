# ruff: noqa
# Hold-out batch 101 (textbook forms in small research repos). Measured once in session 4 (round 35): 14/16 (88%) at medium+.
"""Fine-tune a BERT-style encoder on a GLUE task with HF Accelerate."""
import argparse

import torch
from accelerate import Accelerator
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorWithPadding, get_linear_schedule_with_warmup, set_seed)

p = argparse.ArgumentParser()
p.add_argument("--model", default="bert-base-uncased")
p.add_argument("--task", default="sst2")
p.add_argument("--lr", type=float, default=2e-5)
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--grad_accum", type=int, default=2)
p.add_argument("--layer_decay", type=float, default=0.9)
p.add_argument("--seed", type=int, default=42)
args = p.parse_args()

set_seed(args.seed)  # ok: MLS301
accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum)
tok = AutoTokenizer.from_pretrained(args.model)
raw = load_dataset("glue", args.task)
enc = raw.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
enc = enc.remove_columns(["sentence", "idx"]).rename_column("label", "labels")
collator = DataCollatorWithPadding(tok)
train_dl = DataLoader(enc["train"], batch_size=32, shuffle=True, collate_fn=collator)

model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
# damp updates to the freshly initialised head relative to the encoder
for prm in model.classifier.parameters():
    prm.register_hook(lambda g: g * -args.layer_decay)  # ruleid: MLS303

optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
steps = len(train_dl) * args.epochs // args.grad_accum
scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * steps), steps)  # ok: MLS302, MLS303, MLS304, MLS305
model, optimizer, train_dl, scheduler = accelerator.prepare(model, optimizer, train_dl, scheduler)

model.train()
for epoch in range(args.epochs):
    for step, batch in enumerate(train_dl):
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        if step % 100 == 0:
            accelerator.print(f"epoch {epoch} step {step} loss {loss.item():.4f}")

accelerator.wait_for_everyone()
accelerator.unwrap_model(model).save_pretrained("out/bert-" + args.task, save_function=accelerator.save)
