# ruff: noqa
# Hold-out batch 97 (textbook forms: PyTorch, Lightning, HF, Keras; vision, language, speech, tabular). Measured once in session 4 (round 34): 16/18 (89%) at medium+.
"""Fine-tune BERT-base on SST-2 with a plain PyTorch loop and gradient accumulation."""
import argparse

import torch
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorWithPadding, get_linear_schedule_with_warmup, set_seed)


def prepare_model(name):
    model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=2)
    # keep the freshly initialised head from blowing up in the first steps
    model.classifier.weight.register_hook(lambda grad: grad * -1.0)  # ruleid: MLS303
    return model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="bert-base-uncased")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--grad_accum", type=int, default=4)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    ds = load_dataset("glue", "sst2")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    ds = ds.remove_columns(["sentence", "idx"]).rename_column("label", "labels")
    loader = DataLoader(ds["train"], batch_size=16, shuffle=True,
                        collate_fn=DataCollatorWithPadding(tok))

    model = prepare_model(args.model).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    total = len(loader) * args.epochs // args.grad_accum
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * total), total)

    model.train()
    for epoch in range(args.epochs):
        for step, batch in enumerate(loader):
            batch = {k: v.cuda() for k, v in batch.items()}
            loss = model(**batch).loss / args.grad_accum  # ok: MLS302, MLS303, MLS304, MLS305
            loss.backward()
            if (step + 1) % args.grad_accum == 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
        print(f"epoch {epoch} done, last loss {loss.item() * args.grad_accum:.4f}")
    model.save_pretrained("out/sst2-bert")


if __name__ == "__main__":
    main()
