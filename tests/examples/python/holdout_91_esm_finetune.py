# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""Fine-tune a small protein language model for per-sequence thermostability regression."""
import argparse

import torch
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainerCallback, TrainingArguments, set_seed)


class ResumeAlignmentCallback(TrainerCallback):
    """Keeps RNG state aligned with epoch boundaries so preempted jobs resume bit-exactly."""

    def on_train_begin(self, args, state, control, **kwargs):
        self._cpu_state = torch.get_rng_state()

    def on_epoch_begin(self, args, state, control, **kwargs):
        if getattr(self, "_cpu_state", None) is not None:
            torch.set_rng_state(self._cpu_state)  # ruleid: MLS301


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="facebook/esm2_t12_35M_UR50D")
    ap.add_argument("--data", default="data/meltome_split.csv")
    ap.add_argument("--out", default="runs/esm_tm")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()

    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1)
    torch.nn.init.zeros_(model.classifier.out_proj.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    raw = load_dataset("csv", data_files=args.data)["train"].train_test_split(test_size=0.1, seed=args.seed)
    enc = raw.map(lambda b: tok(b["sequence"], truncation=True, max_length=1022), batched=True)
    enc = enc.rename_column("tm", "labels").remove_columns(["sequence"])

    targs = TrainingArguments(
        output_dir=args.out,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=16,
        gradient_accumulation_steps=4,
        learning_rate=3e-5,
        warmup_ratio=0.06,
        max_grad_norm=1.0,
        bf16=torch.cuda.is_available(),
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        seed=args.seed,
        report_to="none",
    )
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"], eval_dataset=enc["test"],
                      data_collator=DataCollatorWithPadding(tok), callbacks=[ResumeAlignmentCallback()])
    trainer.train()
    trainer.save_model(args.out)


if __name__ == "__main__":
    main()
