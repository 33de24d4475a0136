# ruff: noqa
# Hold-out batch 114 (adversarial: routine-looking indirection). Measured once in session 4 (round 38): 10/20 (50%) at medium+.
"""Seq2seq summarisation fine-tuning with the Hugging Face Trainer."""
import argparse

import torch
from datasets import load_dataset
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq,
                          Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback, set_seed)


class MomentRefresh(TrainerCallback):
    """Re-estimates Adam second moments at epoch boundaries when the length curriculum changes."""

    def __init__(self, keys=("exp_avg_sq",)):
        self.keys = keys

    def on_epoch_begin(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.epoch == 0:
            return
        for st in optimizer.state.values():
            for key in self.keys:
                if key in st:
                    st[key].zero_()  # ruleid: MLS304


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="t5-base")
    ap.add_argument("--revision", default="main")
    ap.add_argument("--out", default="runs/summ")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model, revision=args.revision)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model, revision=args.revision, use_safetensors=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = load_dataset("cnn_dailymail", "3.0.0")

    def prep(ex):
        enc = tok(["summarize: " + a for a in ex["article"]], max_length=512, truncation=True)
        enc["labels"] = tok(text_target=ex["highlights"], max_length=128, truncation=True)["input_ids"]
        return enc

    ds = raw.map(prep, batched=True, remove_columns=raw["train"].column_names)
    targs = Seq2SeqTrainingArguments(
        output_dir=args.out, per_device_train_batch_size=8, learning_rate=3e-4,
        num_train_epochs=3, warmup_ratio=0.03, max_grad_norm=1.0, bf16=torch.cuda.is_available(),
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, seed=args.seed,
    )
    trainer = Seq2SeqTrainer(
        model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["validation"],
        data_collator=DataCollatorForSeq2Seq(tok, model=model), callbacks=[MomentRefresh()],
    )
    trainer.train()
    trainer.save_model(args.out)


if __name__ == "__main__":
    main()
