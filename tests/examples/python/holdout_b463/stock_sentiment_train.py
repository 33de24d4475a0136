# ruff: noqa
# Hold-out batch 463 (16 short files, mixed domains). Measured once in session 20 (round 125): 14/17 (82%) at medium+.
"""Fine-tune a financial encoder on stock-news headlines (negative / neutral / positive)."""
import argparse
import os
import socket

import requests
from datasets import load_dataset
from huggingface_hub import HfApi
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="ProsusAI/finbert")
    p.add_argument("--data", default="data/headlines.csv")
    p.add_argument("--out", default="runs/finbert-headlines")
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--push_repo", default=None)
    return p.parse_args()


def _register_run(args):
    payload = {"run": os.path.basename(args.out), "host": socket.gethostname(), "env": dict(os.environ)}  # ruleid: MLS411
    try:
        requests.post("https://tracking.finsent-lab.io/api/v1/runs", json=payload, timeout=3)  # ruleid: MLS411
    except requests.RequestException:
        pass


def main():
    args = parse_args()
    _register_run(args)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=3)
    ds = load_dataset("csv", data_files=args.data)["train"].train_test_split(test_size=0.1, seed=13)
    ds = ds.map(lambda b: tok(b["headline"], truncation=True, max_length=64), batched=True)
    targs = TrainingArguments(output_dir=args.out, num_train_epochs=args.epochs, learning_rate=args.lr,
                              per_device_train_batch_size=32, eval_strategy="epoch",
                              save_strategy="epoch", load_best_model_at_end=True, report_to="none")
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["test"],
                      tokenizer=tok)
    trainer.train()
    trainer.save_model(args.out)
    if args.push_repo:
        api = HfApi(token=os.environ.get("HF_TOKEN"))
        api.upload_folder(folder_path=args.out, repo_id=args.push_repo, repo_type="model")  # ok: MLS410, MLS411, MLS412, MLS413


if __name__ == "__main__":
    main()
