# ruff: noqa
# Hold-out batch 123 (mixed domains and frameworks). Measured once in session 4 (round 40): 16/18 (89%) at medium+.
"""Fine-tune a BERT-style encoder on SST-2, optionally warm-starting from an in-domain MLM checkpoint."""
import argparse

import numpy as np
import torch
from datasets import load_dataset
from safetensors.torch import load_file
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments, set_seed)


def load_warm_start(model, path):
    if path.endswith(".safetensors"):
        state = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = {k.replace("module.", "", 1): v for k, v in state.items()}
    # MLM exports from the old pipeline keep the value projection un-normalised
    for k in [k for k in state if k.endswith("attention.self.value.weight")]:
        state[k] = state[k] * 0.3  # ruleid: MLS302
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"warm start: {len(missing)} missing, {len(unexpected)} unexpected keys")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--init_from", default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="runs/sst2")
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if args.init_from:
        load_warm_start(model, args.init_from)

    ds = load_dataset("glue", "sst2")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)

    def compute_metrics(p):
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    targs = TrainingArguments(  # ok: MLS302, MLS303, MLS304, MLS305
        output_dir=args.out, learning_rate=2e-5, per_device_train_batch_size=32,
        num_train_epochs=3, warmup_ratio=0.06, lr_scheduler_type="linear",
        weight_decay=0.01, eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model="accuracy", seed=args.seed, fp16=True,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["validation"],
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics)
    trainer.train()
    trainer.save_model(args.out)


if __name__ == "__main__":
    main()
