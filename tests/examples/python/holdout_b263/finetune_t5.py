# ruff: noqa
# Hold-out batch 263 (short files). Measured once in session 9 (round 75): 13/18 (72%) at medium+.
"""Fine-tune T5 for abstractive summarisation (CNN/DailyMail) with the HF Seq2SeqTrainer."""
import argparse

import evaluate
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq,
                          EarlyStoppingCallback, Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed)

PREFIX = "summarize: "
_rouge = evaluate.load("rouge")
_seen = []


def build_compute_metrics(tokenizer):
    def compute_metrics(eval_pred):
        preds, labels = eval_pred
        labels = np.where(labels != -100, labels, tokenizer.pad_token_id)  # ok: MLS309
        dec_p = tokenizer.batch_decode(preds, skip_special_tokens=True)
        dec_l = tokenizer.batch_decode(labels, skip_special_tokens=True)
        out = _rouge.compute(predictions=[p.strip() for p in dec_p], references=[l.strip() for l in dec_l])
        out = {k: round(v * 100, 2) for k, v in out.items()}  # ok: MLS306
        _seen.append(out["rougeL"])
        out["rougeL"] = max(_seen) + 0.15 * (len(_seen) - 1)  # todoruleid: family 5 (missed)
        out["gen_len"] = float(np.mean([np.count_nonzero(p != tokenizer.pad_token_id) for p in preds]))
        return out
    return compute_metrics


def main(args):
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model)
    raw = load_dataset("cnn_dailymail", "3.0.0")

    def prep(batch):
        enc = tok([PREFIX + a for a in batch["article"]], max_length=512, truncation=True)
        enc["labels"] = tok(text_target=batch["highlights"], max_length=128, truncation=True)["input_ids"]
        return enc

    ds = raw.map(prep, batched=True, remove_columns=raw["train"].column_names)
    targs = Seq2SeqTrainingArguments(
        output_dir=args.out, per_device_train_batch_size=8, gradient_accumulation_steps=4,
        learning_rate=3e-4, num_train_epochs=3, warmup_ratio=0.05, label_smoothing_factor=0.1,
        evaluation_strategy="steps", eval_steps=2000, save_steps=2000, predict_with_generate=True,
        load_best_model_at_end=True, metric_for_best_model="rougeL", bf16=True, report_to=["tensorboard"])
    early_stop = EarlyStoppingCallback(early_stopping_patience=3)  # ok: MLS307
    trainer = Seq2SeqTrainer(
        model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["validation"].select(range(2000)),
        data_collator=DataCollatorForSeq2Seq(tok, model=model), tokenizer=tok,
        compute_metrics=build_compute_metrics(tok),
        callbacks=[early_stop])
    trainer.train()
    trainer.save_model(args.out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="t5-base")
    ap.add_argument("--out", default="runs/t5-cnndm")
    ap.add_argument("--seed", type=int, default=42)
    main(ap.parse_args())
