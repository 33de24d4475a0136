# ruff: noqa
# Hold-out batch 199 (16 short benchmark-format files). Measured once in session 7 (round 59): 13/17 (76%) at medium+, 1 benign line flagged.
"""Instruction fine-tuning of a causal LM with LoRA adapters using the HF Trainer."""
import argparse

from datasets import load_dataset
from peft import LoraConfig, get_peft_model
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling,
                          Trainer, TrainerCallback, TrainingArguments, set_seed)


class AdapterStateCallback(TrainerCallback):
    """Periodically refreshes Adam second-moment statistics of the adapter parameters."""

    def __init__(self, every=200):
        self.every = every

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step == 0 or state.global_step % self.every:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p, {})
                if "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(1e-3)  # ruleid: MLS304


def tokenize_fn(tokenizer, max_len):
    def _fn(ex):
        text = f"### Instruction:\n{ex['instruction']}\n\n### Response:\n{ex['output']}{tokenizer.eos_token}"
        return tokenizer(text, truncation=True, max_length=max_len)
    return _fn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="example-org/llm-7b")
    ap.add_argument("--data", default="data/instructions.jsonl")
    ap.add_argument("--out", default="runs/lora")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype="auto")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)

    ds = load_dataset("json", data_files=args.data)["train"]
    ds = ds.map(tokenize_fn(tok, 1024), remove_columns=ds.column_names)
    targs = TrainingArguments(  # ok: MLS302, MLS303, MLS304, MLS305
        output_dir=args.out, per_device_train_batch_size=4, gradient_accumulation_steps=8,
        learning_rate=2e-4, lr_scheduler_type="cosine", warmup_ratio=0.03, max_grad_norm=1.0,
        num_train_epochs=3, bf16=True, logging_steps=10, save_steps=500, seed=args.seed,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=ds,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
                      callbacks=[AdapterStateCallback()])
    trainer.train()
    model.save_pretrained(args.out)


if __name__ == "__main__":
    main()
