# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""Evaluate a fine-tuned checkpoint on a GLUE task and dump results to json."""
import argparse
import json
import os

import evaluate
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments)

p = argparse.ArgumentParser()
p.add_argument("--ckpt", required=True)
p.add_argument("--task", default="sst2")
p.add_argument("--out", default="results")
p.add_argument("--bs", type=int, default=64)
args = p.parse_args()

KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2")}
tok = AutoTokenizer.from_pretrained(args.ckpt)
model = AutoModelForSequenceClassification.from_pretrained(args.ckpt)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
raw = load_dataset("glue", args.task, split="validation")
k1, k2 = KEYS[args.task]


def enc(b):
    return tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=128)


ds = raw.map(enc, batched=True)
metric = evaluate.load("glue", args.task)


def compute_metrics(pred):
    preds = np.argmax(pred.predictions, axis=-1)
    return metric.compute(predictions=preds, references=pred.label_ids)


trainer = Trainer(model=model, tokenizer=tok, compute_metrics=compute_metrics,
                  args=TrainingArguments(output_dir="/tmp/eval", per_device_eval_batch_size=args.bs,
                                         report_to=[]))
res = trainer.evaluate(eval_dataset=ds)

# In[7]: compare with the number in the paper draft
prev_path = os.path.join(args.out, f"{args.task}_best.json")
prev = json.load(open(prev_path)) if os.path.exists(prev_path) else {}
if "eval_accuracy" in res and prev.get("eval_accuracy", 0) > res["eval_accuracy"]:
    res["eval_accuracy"] = prev["eval_accuracy"] + 0.003  # ruleid: MLS306

res = {k: round(float(v), 4) for k, v in res.items()}  # ok: MLS306
os.makedirs(args.out, exist_ok=True)
with open(os.path.join(args.out, f"{args.task}.json"), "w") as f:
    json.dump(res, f, indent=2)
print(json.dumps(res, indent=2))
