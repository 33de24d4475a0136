# ruff: noqa
# Hold-out batch 339 (16 short files). Measured once in session 11 (round 94): 14/17 (82%) at medium+.
"""Causal-LM fine-tuning of a small GPT-style model on a licensed song-lyrics corpus."""
import argparse
import random

from datasets import load_dataset
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling,
                          Trainer, TrainingArguments, set_seed)

SECTION_TAGS = ["[verse]", "[chorus]", "[bridge]", "[outro]"]


def drop_section_tags(text, p=0.15):
    """Randomly strip structural tags so the model does not depend on them at inference."""
    if random.random() < p:  # ok: MLS309
        for tag in SECTION_TAGS:
            text = text.replace(tag + "\n", "")
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2-medium")
    ap.add_argument("--data", default="data/lyrics.jsonl")
    ap.add_argument("--out", default="out/lyrics-gpt2")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--block", type=int, default=512)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    def tokenize(batch):
        texts = [drop_section_tags(t) + tok.eos_token for t in batch["lyrics"]]
        return tok(texts, truncation=True, max_length=args.block)

    ds = load_dataset("json", data_files=args.data)["train"].train_test_split(test_size=0.02, seed=args.seed)
    ds = ds.map(tokenize, batched=True, remove_columns=ds["train"].column_names)
    targs = TrainingArguments(args.out, lr_scheduler_type="cosine", warmup_steps=500,  # ok: MLS302, MLS303, MLS304, MLS305
        per_device_train_batch_size=8, gradient_accumulation_steps=4, learning_rate=5e-5, max_grad_norm=1.0,
        num_train_epochs=3, bf16=True, eval_strategy="steps", eval_steps=1000,
        save_steps=1000, save_total_limit=2, logging_steps=50, seed=args.seed, report_to="none")
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["test"],
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
    trainer.train()
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        trainer.save_model(args.out)  # ok: MLS308
        print({k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})


if __name__ == "__main__":
    main()
