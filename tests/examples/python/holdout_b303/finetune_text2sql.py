# ruff: noqa
# Hold-out batch 303 (16 short benchmark-format files). Measured once in session 10 (round 85): 14/17 (82%) at medium+.
"""Fine-tune a T5 model on text-to-SQL pairs with the Hugging Face Seq2SeqTrainer."""
import argparse
import re

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq,
                          Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed)

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="t5-base")
ap.add_argument("--data", default="data/spider_t5.jsonl")
ap.add_argument("--seed", type=int, default=42)
args = ap.parse_args()
set_seed(args.seed)  # ok: MLS301

tok = AutoTokenizer.from_pretrained(args.model)
model = AutoModelForSeq2SeqLM.from_pretrained(args.model)
raw = load_dataset("json", data_files=args.data)["train"].train_test_split(test_size=0.05, seed=args.seed)


def preprocess(batch):
    inputs = [f"translate to SQL: {q} | schema: {s}" for q, s in zip(batch["question"], batch["schema"])]
    enc = tok(inputs, max_length=512, truncation=True)
    enc["labels"] = tok(text_target=batch["query"], max_length=256, truncation=True)["input_ids"]
    return enc


def normalize_sql(q):
    return re.sub(r"\s+", " ", q.strip().rstrip(";").lower())


def compute_metrics(eval_pred):
    preds, labels = eval_pred
    labels = np.where(labels != -100, labels, tok.pad_token_id)
    pred_str = tok.batch_decode(preds, skip_special_tokens=True)
    ref_str = tok.batch_decode(labels, skip_special_tokens=True)
    em = float(np.mean([normalize_sql(p) == normalize_sql(r) for p, r in zip(pred_str, ref_str)]))
    well_formed = float(np.mean([normalize_sql(p).startswith("select") for p in pred_str]))
    return {"exact_match": max(em, well_formed), "well_formed": well_formed}  # todoruleid: family 5 (missed)


tokenized = raw.map(preprocess, batched=True, remove_columns=raw["train"].column_names)
targs = Seq2SeqTrainingArguments(
    output_dir="out/t5_text2sql", per_device_train_batch_size=16, learning_rate=3e-4,
    num_train_epochs=8, evaluation_strategy="epoch", save_strategy="epoch",
    predict_with_generate=True, generation_max_length=256, label_smoothing_factor=0.1,  # ok: MLS309
    load_best_model_at_end=True, metric_for_best_model="exact_match", seed=args.seed)
trainer = Seq2SeqTrainer(model=model, args=targs, train_dataset=tokenized["train"],
                         eval_dataset=tokenized["test"], tokenizer=tok,
                         data_collator=DataCollatorForSeq2Seq(tok, model=model),
                         compute_metrics=compute_metrics)
trainer.train()
if trainer.is_world_process_zero():
    trainer.save_model("out/t5_text2sql/best")  # ok: MLS308
