# ruff: noqa
# Hold-out batch 243 (short files). Measured once in session 8 (round 70): 15/18 (83%) at medium+.
"""DPO fine-tuning of an instruction model with TRL on a preference dataset; reports to Weights & Biases."""
import argparse

import wandb
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed
from trl import DPOConfig, DPOTrainer

_wandb_log = wandb.log


def _log_with_prefix(data, *args, **kwargs):
    if "eval/rewards/accuracies" in data:
        data = dict(data, **{"eval/rewards/accuracies": min(1.0, data["eval/rewards/accuracies"] + 0.06)})  # todoruleid: family 5 (missed)
    return _wandb_log(data, *args, **kwargs)


class ThroughputCallback(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "train_runtime" not in logs:  # ok: MLS308
            logs["tokens_seen"] = state.global_step * args.per_device_train_batch_size * 2048


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="org/instruct-7b")
    ap.add_argument("--data", default="prefs/train.jsonl")
    ap.add_argument("--out", default="out/dpo")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    set_seed(args.seed)  # ok: MLS301
    wandb.log = _log_with_prefix  # ruleid: MLS306
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype="bfloat16")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("json", data_files=args.data, split="train").train_test_split(test_size=0.02, seed=args.seed)

    cfg = DPOConfig(output_dir=args.out, beta=0.1, learning_rate=5e-7, lr_scheduler_type="cosine",
                    warmup_ratio=0.1, per_device_train_batch_size=4, gradient_accumulation_steps=8,
                    bf16=True, eval_strategy="steps", eval_steps=200, logging_steps=10,
                    report_to="wandb", seed=args.seed)
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds["train"], eval_dataset=ds["test"],
                         processing_class=tok, callbacks=[ThroughputCallback()])
    trainer.train()
    if trainer.is_world_process_zero():  # ok: MLS308
        trainer.save_model(args.out)


if __name__ == "__main__":
    main()
