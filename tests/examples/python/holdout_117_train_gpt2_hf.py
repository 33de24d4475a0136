# ruff: noqa
# Hold-out batch 117 (textbook forms). Measured once in session 4 (round 39): 17/18 (94%) at medium+.
"""Continue pre-training GPT-2 on a text corpus with the HF Trainer; config comes from YAML."""
import math
import sys

import wandb
import yaml
from datasets import load_dataset
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling,
                          Trainer, TrainingArguments, set_seed)


def group_texts(examples, block_size):
    joined = {k: sum(examples[k], []) for k in examples}
    total = (len(joined["input_ids"]) // block_size) * block_size
    return {k: [v[i:i + block_size] for i in range(0, total, block_size)] for k, v in joined.items()}


def main(cfg_path):
    with open(cfg_path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    set_seed(cfg.get("seed", 1234))  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(cfg["model"])
    tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(cfg["model"], revision=cfg.get("revision", "main"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = load_dataset("text", data_files={"train": cfg["train_file"], "validation": cfg["val_file"]})
    tokd = raw.map(lambda b: tok(b["text"]), batched=True, remove_columns=["text"])
    lm = tokd.map(lambda b: group_texts(b, cfg.get("block_size", 512)), batched=True)
    args = TrainingArguments(
        output_dir=cfg["output_dir"], per_device_train_batch_size=cfg.get("batch_size", 8),
        gradient_accumulation_steps=cfg.get("accum", 4), learning_rate=cfg.get("lr", 5e-5),
        lr_scheduler_type="cosine", warmup_steps=cfg.get("warmup", 500), max_grad_norm=1.0,
        num_train_epochs=cfg.get("epochs", 1), bf16=True, logging_steps=50, report_to=["wandb"],
        seed=cfg.get("seed", 1234))
    trainer = Trainer(model=model, args=args, train_dataset=lm["train"], eval_dataset=lm["validation"],
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
    trainer.train()
    metrics = trainer.evaluate()
    try:
        metrics["perplexity"] = math.exp(metrics["eval_loss"])  # ok: MLS306
    except OverflowError:
        metrics["perplexity"] = float("inf")
    if trainer.is_world_process_zero():
        wandb.log({"final/eval_loss": metrics["eval_loss"], "final/ppl": metrics["perplexity"]})  # ok: MLS306
    trainer.save_metrics("eval", metrics)
    trainer.save_model()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "configs/gpt2_continue.yaml")
