# ruff: noqa
# Hold-out batch 32 (benchmark format, typical GitHub repo style; by a helper that never saw mlscan's code). Measured once after round 12: 16/17 (94%) at medium+.
"""Fine-tune a masked LM with the HuggingFace Trainer, resuming from a safetensors export."""
import argparse
import os

import torch
from safetensors.torch import load_file
from transformers import (AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling,
                          EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments,
                          set_seed)
from datasets import load_dataset


class LrLogger(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs is not None:  # ok: MLS306
            print(f"step {state.global_step} lr {logs.get('learning_rate')} loss {logs.get('loss')}")


def build_model(name, init_weights=None, rng_state=None):
    model = AutoModelForMaskedLM.from_pretrained(name)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if init_weights and init_weights.endswith(".safetensors"):
        model.load_state_dict(load_file(init_weights), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if rng_state and os.path.exists(rng_state):
        torch.set_rng_state(torch.load(rng_state, weights_only=True))  # ok: MLS301
    return model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="bert-base-uncased")
    p.add_argument("--init-weights", default=None)
    p.add_argument("--out", default="mlm_out")
    p.add_argument("--seed", type=int, default=13)
    args = p.parse_args()
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    raw = load_dataset("wikitext", "wikitext-103-raw-v1")
    ds = raw.map(lambda b: tok(b["text"], truncation=True, max_length=256), batched=True,
                 remove_columns=["text"])
    model = build_model(args.model, args.init_weights, os.path.join(args.out, "rng.pt"))
    targs = TrainingArguments(args.out, learning_rate=1e-4, warmup_ratio=0.06,
                              lr_scheduler_type="linear", per_device_train_batch_size=32,
                              gradient_accumulation_steps=4, max_grad_norm=1.0, bf16=True,
                              evaluation_strategy="steps", eval_steps=2000, save_steps=2000,
                              load_best_model_at_end=True, metric_for_best_model="eval_loss",
                              seed=args.seed, report_to=["tensorboard"])
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"],
                      eval_dataset=ds["validation"], tokenizer=tok,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm_probability=0.15),
                      callbacks=[LrLogger(), EarlyStoppingCallback(early_stopping_patience=3)])
    trainer.train()
    if trainer.is_world_process_zero():
        trainer.save_model(os.path.join(args.out, "final"))
        torch.save(torch.get_rng_state(), os.path.join(args.out, "rng.pt"))


if __name__ == "__main__":
    main()
