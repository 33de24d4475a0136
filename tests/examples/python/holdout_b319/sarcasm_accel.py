# ruff: noqa
# Hold-out batch 319 (16 short benchmark-format files). Measured once in session 10 (round 89): 14/18 (78%) at medium+.
"""Sarcasm detection (headlines) with RoBERTa, Hugging Face accelerate and Weights & Biases logging."""
import argparse

import torch
import wandb
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from sklearn.metrics import f1_score
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

_wandb_log = wandb.log
_best = {}


def _log_with_running_best(data, *args, **kwargs):
    for key in [k for k in data if k.startswith("val/")]:
        _best[key] = max(_best.get(key, data[key]), data[key])
        data[key] = _best[key]  # ruleid: MLS306
    return _wandb_log(data, *args, **kwargs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="roberta-base")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--accum", type=int, default=2)
    args = ap.parse_args()
    acc = Accelerator(gradient_accumulation_steps=args.accum)
    set_seed(17)  # ok: MLS301
    if acc.is_main_process:
        wandb.init(project="sarcasm-headlines", config=vars(args))  # ok: MLS306
        wandb.log = _log_with_running_best  # ruleid: MLS306
    tok = AutoTokenizer.from_pretrained(args.model)
    ds = load_dataset("json", data_files="data/Sarcasm_Headlines_Dataset_v2.json")["train"].train_test_split(0.1, seed=17)
    ds = ds.map(lambda b: tok(b["headline"], truncation=True, max_length=48, padding="max_length"), batched=True)
    ds = ds.rename_column("is_sarcastic", "labels").with_format("torch", columns=["input_ids", "attention_mask", "labels"])
    train_dl = DataLoader(ds["train"], batch_size=32, shuffle=True)
    val_dl = DataLoader(ds["test"], batch_size=128)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, 200, args.epochs * len(train_dl) // args.accum)
    model, opt, train_dl, val_dl, sched = acc.prepare(model, opt, train_dl, val_dl, sched)
    for epoch in range(args.epochs):
        model.train()
        for batch in train_dl:
            with acc.accumulate(model):
                loss = model(**batch).loss
                acc.backward(loss)
                acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
        model.eval()
        preds, golds = [], []
        for batch in val_dl:
            with torch.no_grad():
                logits = model(**batch).logits
            p, g = acc.gather_for_metrics((logits.argmax(-1), batch["labels"]))
            preds += p.tolist()
            golds += g.tolist()
        if acc.is_main_process:
            wandb.log({"epoch": epoch, "train/loss": loss.item(), "val/f1": f1_score(golds, preds)})
    acc.wait_for_everyone()
    acc.save_model(model, "out/sarcasm-roberta")


if __name__ == "__main__":
    main()
