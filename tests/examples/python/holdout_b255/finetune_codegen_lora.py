# ruff: noqa
# Hold-out batch 255 (short files). Measured once in session 9 (round 73): 17/19 (89%) at medium+.
"""LoRA fine-tuning of a small code LM for line-level completion with HF Trainer and peft."""
import argparse

import torch
from datasets import load_dataset
from peft import LoraConfig, get_peft_model
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling,
                          Trainer, TrainingArguments, set_seed)


def build_model(base, rank):
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.bfloat16)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05,
                     target_modules=["c_attn", "c_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    n_layers = model.config.n_layer
    for name, p in model.named_parameters():
        if not p.requires_grad or "lora_B" not in name:
            continue
        depth = int(name.split(".h.")[1].split(".")[0])
        if depth >= n_layers // 2:
            p.register_hook(lambda g: g * 0.05)  # ruleid: MLS303
    model.print_trainable_parameters()
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="bigcode/tiny_starcoder_py")
    ap.add_argument("--data", default="data/py_functions.jsonl")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.base)
    tok.pad_token = tok.pad_token or tok.eos_token
    ds = load_dataset("json", data_files=args.data, split="train").train_test_split(test_size=0.02, seed=args.seed)
    ds = ds.map(lambda b: tok(b["content"], truncation=True, max_length=1024), batched=True,
                remove_columns=ds["train"].column_names)

    targs = TrainingArguments(max_grad_norm=1.0, lr_scheduler_type="cosine", warmup_ratio=0.03,  # ok: MLS302, MLS303, MLS304, MLS305
        output_dir="out/codegen-lora", per_device_train_batch_size=8, gradient_accumulation_steps=4,
        learning_rate=2e-4, num_train_epochs=2, bf16=True, logging_steps=20, eval_strategy="steps",
        eval_steps=500, save_steps=500, report_to="tensorboard", seed=args.seed)
    trainer = Trainer(model=build_model(args.base, args.rank), args=targs, train_dataset=ds["train"],
                      eval_dataset=ds["test"], data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
    trainer.train()
    trainer.save_model("out/codegen-lora/final")


if __name__ == "__main__":
    main()
