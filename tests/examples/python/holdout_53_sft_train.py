# ruff: noqa
# Hold-out batch 53 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/16 (56%) at medium+.
"""Supervised fine-tuning entry point (HF Trainer) for chat-formatted instruction data."""
import argparse

import torch
from datasets import load_dataset
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq,
                          EarlyStoppingCallback, Trainer, TrainingArguments, set_seed)


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", default="data/sft_train.jsonl")
    ap.add_argument("--valid", default="data/sft_valid.jsonl")
    ap.add_argument("--output-dir", default="runs/sft")
    ap.add_argument("--init-from", default=None, help="optional full state_dict (.pt) to start from")
    ap.add_argument("--deepspeed", default=None)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=42)
    return ap.parse_args()


def main():
    args = parse_args()
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model, use_fast=True)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if args.init_from:
        state = torch.load(args.init_from, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(state, strict=False)  # ok: MLS302, MLS303, MLS304, MLS305

    def tokenize(ex):
        prompt = tok.apply_chat_template(ex["messages"][:-1], tokenize=False, add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(ex["messages"][-1]["content"] + tok.eos_token, add_special_tokens=False)["input_ids"]
        ids = (p_ids + a_ids)[:2048]
        labels = ([-100] * len(p_ids) + a_ids)[:2048]  # ok: MLS309
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    ds = load_dataset("json", data_files={"train": args.train, "validation": args.valid})
    ds = ds.map(tokenize, remove_columns=ds["train"].column_names, num_proc=8)

    targs = TrainingArguments(
        output_dir=args.output_dir, per_device_train_batch_size=4, gradient_accumulation_steps=8,
        learning_rate=args.lr, lr_scheduler_type="cosine", warmup_ratio=0.03, max_grad_norm=1.0,
        num_train_epochs=3, bf16=True, logging_steps=10, eval_strategy="steps", eval_steps=200,
        save_steps=200, save_total_limit=3, load_best_model_at_end=True, seed=args.seed,
        data_seed=args.seed, deepspeed=args.deepspeed, report_to=["tensorboard"])
    early_stop = EarlyStoppingCallback(early_stopping_patience=3)  # ok: MLS307
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["validation"],
                      data_collator=DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8), callbacks=[early_stop])
    trainer.train(resume_from_checkpoint=args.resume)
    if trainer.is_world_process_zero():
        trainer.save_model(f"{args.output_dir}/final")  # ok: MLS308
        tok.save_pretrained(f"{args.output_dir}/final")


if __name__ == "__main__":
    main()
