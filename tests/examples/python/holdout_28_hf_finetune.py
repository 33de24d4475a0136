# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""Fine-tune a causal LM with the HF Trainer; early stopping on eval loss."""
import os
import sys

from datasets import load_dataset
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling,
                          EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments,
                          set_seed)


class StopOnNaN(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and logs.get("loss") is not None and logs["loss"] != logs["loss"]:
            control.should_training_stop = True  # ok: MLS307


def main(model_name: str = "gpt2", out: str = "runs/ft"):
    set_seed(int(os.environ.get("SEED", "42")))  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(model_name)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_name, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = load_dataset("wikitext", "wikitext-2-raw-v1")
    ds = raw.map(lambda b: tok(b["text"], truncation=True, max_length=512),
                 batched=True, remove_columns=["text"])
    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=8, gradient_accumulation_steps=4,
        learning_rate=5e-5, warmup_ratio=0.03, lr_scheduler_type="cosine", num_train_epochs=3,
        eval_strategy="steps", eval_steps=200, save_steps=200, load_best_model_at_end=True,
        metric_for_best_model="eval_loss", greater_is_better=False, bf16=True, report_to="wandb",
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["validation"],
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=3), StopOnNaN()],
    )
    trainer.train()
    metrics = trainer.evaluate()
    metrics["eval_ppl"] = float(2.718281828 ** metrics["eval_loss"])  # ok: MLS306
    if trainer.is_world_process_zero():
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        trainer.save_model(os.path.join(out, "final"))
    if metrics["eval_loss"] > 10:
        sys.exit(1)  # ok: MLS307


if __name__ == "__main__":
    main(*sys.argv[1:])
