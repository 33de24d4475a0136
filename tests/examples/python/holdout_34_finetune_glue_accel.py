# ruff: noqa
# Hold-out batch 34 (benchmark format, equivalent-API variants; by a helper that never saw mlscan's code). Measured once after round 13: 13/17 (76%) at medium+.
"""Fine-tune a sequence classifier on a GLUE task with HF accelerate."""
import argparse

import torch
from accelerate import Accelerator
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorWithPadding, get_linear_schedule_with_warmup)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="roberta-base")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=2e-5)
    args = ap.parse_args()

    acc = Accelerator(mixed_precision="fp16")
    tok = AutoTokenizer.from_pretrained(args.model)
    raw = load_dataset("glue", args.task)
    enc = raw.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    enc = enc.remove_columns(["sentence", "idx"]).rename_column("label", "labels")
    collate = DataCollatorWithPadding(tok)
    train_dl = DataLoader(enc["train"], batch_size=32, shuffle=True, collate_fn=collate)

    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    last_block = model.roberta.encoder.layer[-1]
    last_block.register_forward_hook(lambda mod, inp, out: (out[0] * 0.5,) + tuple(out[1:]))  # ruleid: MLS303

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    total = len(train_dl) * args.epochs
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * total), total)
    model, opt, train_dl, sched = acc.prepare(model, opt, train_dl, sched)

    model.train()
    for epoch in range(args.epochs):
        for step, batch in enumerate(train_dl):
            out = model(**batch)
            acc.backward(out.loss)
            acc.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            if step % 100 == 0:
                acc.print(f"epoch {epoch} step {step} loss {out.loss.item():.4f}")

    acc.wait_for_everyone()
    acc.unwrap_model(model).save_pretrained("out/glue", save_function=acc.save)


if __name__ == "__main__":
    main()
