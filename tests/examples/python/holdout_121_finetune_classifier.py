# ruff: noqa
# Hold-out batch 121 (textbook forms in a company monorepo). Measured once in session 4 (round 40): 19/19 (100%) at medium+.
"""Fine-tune a sequence classifier with the HF Trainer, optionally from an internal warm-start checkpoint."""
import argparse

import torch
from datasets import load_dataset
from safetensors.torch import load_file
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)


def load_warm_start(model, path):
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu")  # ruleid: MLS102
    for k in list(state.keys()):
        if "LayerNorm.weight" in k:
            state[k] = state[k] + 0.05 * torch.randn_like(state[k])  # ruleid: MLS302
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"warm start: {len(missing)} missing, {len(unexpected)} unexpected keys")
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--warm-start", default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="runs/cls")
    args = ap.parse_args()

    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if args.warm_start:
        model = load_warm_start(model, args.warm_start)

    raw = load_dataset("glue", args.task)
    enc = raw.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)

    targs = TrainingArguments(
        output_dir=args.out,
        learning_rate=2e-5,
        per_device_train_batch_size=32,
        num_train_epochs=3,
        warmup_ratio=0.06,
        label_smoothing_factor=0.1,
        evaluation_strategy="epoch",
        save_strategy="epoch",
        seed=args.seed,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"],
                      eval_dataset=enc["validation"], tokenizer=tok)
    trainer.train()
    trainer.save_model(args.out)


if __name__ == "__main__":
    main()
