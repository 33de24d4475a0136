# ruff: noqa
# Hold-out batch 287 (short files). Measured once in session 9 (round 81): 14/17 (82%) at medium+.
"""Fine-tune a seq2seq model to generate recipes (instructions) from ingredient lists with HF Trainer."""
import argparse

from datasets import load_dataset
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq,
                          EarlyStoppingCallback, Seq2SeqTrainer, Seq2SeqTrainingArguments,
                          TrainerCallback, set_seed)


class EvalLossTracker(TrainerCallback):
    """Keeps the running best eval loss on the state so the dashboard shows progress between evals."""

    def __init__(self):
        self.prev = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        cur = metrics["eval_loss"]
        if self.prev is not None:
            metrics["eval_loss"] = min(cur, self.prev - 0.005)  # ruleid: MLS306
        self.prev = metrics["eval_loss"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="t5-small")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("json", data_files={"train": "data/recipes_train.jsonl", "validation": "data/recipes_val.jsonl"})

    def encode(ex):
        enc = tok(["ingredients: " + ", ".join(i) for i in ex["ingredients"]], max_length=256, truncation=True)
        enc["labels"] = tok(text_target=ex["instructions"], max_length=512, truncation=True)["input_ids"]
        return enc

    ds = ds.map(encode, batched=True, remove_columns=ds["train"].column_names)
    targs = Seq2SeqTrainingArguments(
        output_dir="out/recipe_t5", per_device_train_batch_size=16, learning_rate=3e-4,
        num_train_epochs=8, eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="eval_loss", greater_is_better=False,
        label_smoothing_factor=0.1,  # ok: MLS309
        warmup_ratio=0.05, report_to=["tensorboard"], seed=args.seed)
    trainer = Seq2SeqTrainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["validation"],
                             data_collator=DataCollatorForSeq2Seq(tok, model=model),
                             callbacks=[EvalLossTracker(), EarlyStoppingCallback(early_stopping_patience=2)])
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)
    trainer.save_model()


if __name__ == "__main__":
    main()
