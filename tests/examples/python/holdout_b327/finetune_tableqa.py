# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""Fine-tune a seq2seq model on table question answering (WikiTableQuestions-style) with HF Trainer."""
import argparse

import numpy as np
import pandas as pd
from datasets import load_dataset
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, EarlyStoppingCallback,
                          Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed)


def linearize(table_csv, question, max_rows=40):
    df = pd.read_csv(table_csv, dtype=str).fillna("").head(max_rows)
    rows = [" | ".join(df.columns)] + [" | ".join(r) for r in df.values.tolist()]
    return f"question: {question} table: " + " [ROW] ".join(rows)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="t5-base")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="runs/tableqa")
    args = p.parse_args()
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = load_dataset("json", data_files={"train": "data/wtq/train.jsonl", "validation": "data/wtq/dev.jsonl"})

    def encode(ex):
        enc = tok(linearize(ex["table"], ex["question"]), max_length=1024, truncation=True)
        enc["labels"] = tok(text_target=ex["answer"], max_length=64, truncation=True)["input_ids"]
        return enc

    ds = raw.map(encode, remove_columns=raw["train"].column_names, num_proc=8)

    def compute_metrics(pred):
        preds = np.where(pred.predictions != -100, pred.predictions, tok.pad_token_id)
        labels = np.where(pred.label_ids != -100, pred.label_ids, tok.pad_token_id)
        hyp = [s.strip().lower() for s in tok.batch_decode(preds, skip_special_tokens=True)]
        ref = [s.strip().lower() for s in tok.batch_decode(labels, skip_special_tokens=True)]
        acc = float(np.mean([h == r for h, r in zip(hyp, ref)]))
        return {"denotation_acc": round(acc, 4)}  # ok: MLS306

    targs = Seq2SeqTrainingArguments(
        output_dir=args.out, per_device_train_batch_size=8, gradient_accumulation_steps=4, learning_rate=3e-4,
        num_train_epochs=10, warmup_ratio=0.06, max_grad_norm=1.0, label_smoothing_factor=0.1, seed=args.seed,
        evaluation_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="denotation_acc", predict_with_generate=True, bf16=True, report_to=["tensorboard"],
    )
    trainer = Seq2SeqTrainer(
        model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["validation"], tokenizer=tok,
        data_collator=DataCollatorForSeq2Seq(tok, model=model), compute_metrics=compute_metrics,
    )
    trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=3))  # ok: MLS307
    trainer.train()
    if trainer.is_world_process_zero():
        trainer.save_model(args.out)  # ok: MLS307


if __name__ == "__main__":
    main()
