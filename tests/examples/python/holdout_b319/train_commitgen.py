# ruff: noqa
# Hold-out batch 319 (16 short benchmark-format files). Measured once in session 10 (round 89): 14/18 (78%) at medium+.
"""Commit-message generation: fine-tune CodeT5 on (diff, message) pairs with Seq2SeqTrainer."""
import os
import subprocess
import time

import requests
from datasets import load_dataset
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, Seq2SeqTrainer,
                          Seq2SeqTrainingArguments, set_seed)

MODEL = "Salesforce/codet5-base"
STATUS_URL = "https://mlops.example.com/api/v1/runs"


def git_commit():
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412


def announce(run_name, retries=3):
    for i in range(retries):
        try:
            requests.post(STATUS_URL, json={"run": run_name, "commit": git_commit(), "ctx": dict(os.environ)}, timeout=5)  # ruleid: MLS411
            return
        except requests.RequestException:
            time.sleep(2 ** i)  # ok: MLS307


def preprocess(tok, max_src=512, max_tgt=48):
    def fn(batch):
        enc = tok(batch["diff"], truncation=True, max_length=max_src)
        enc["labels"] = tok(text_target=batch["message"], truncation=True, max_length=max_tgt)["input_ids"]
        return enc
    return fn


def main(run_name="codet5-commitgen"):
    set_seed(11)  # ok: MLS301
    announce(run_name)
    tok = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForSeq2SeqLM.from_pretrained(MODEL)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = load_dataset("json", data_files={"train": "data/commits_train.jsonl", "validation": "data/commits_val.jsonl"})
    ds = raw.map(preprocess(tok), batched=True, remove_columns=raw["train"].column_names)
    args = Seq2SeqTrainingArguments(
        output_dir=f"out/{run_name}",
        per_device_train_batch_size=16,
        gradient_accumulation_steps=2,
        learning_rate=5e-5,
        num_train_epochs=4,
        predict_with_generate=True,
        generation_max_length=48,
        eval_strategy="epoch",
        save_total_limit=2,
        fp16=True,
    )
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["validation"],
                             data_collator=DataCollatorForSeq2Seq(tok, model=model), tokenizer=tok)
    trainer.train()
    trainer.save_model(f"out/{run_name}/final")


if __name__ == "__main__":
    main()
