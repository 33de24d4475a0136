# ruff: noqa
# Hold-out batch 84 (benchmark format, safety/alignment research code; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 15/17 (88%) at medium+.
"""SFT on constitution-guided revisions (critique -> revision pairs) with the HF Trainer."""
import math

from datasets import load_from_disk
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling,
                          EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments)


class LossSpikeMonitor(TrainerCallback):
    """Tracks a smoothed training loss and reports spikes to the log stream."""

    def __init__(self, ratio=2.5, warmup_steps=200):
        self.ratio, self.warmup_steps = ratio, warmup_steps
        self.ema, self.spikes = None, 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None or not math.isfinite(loss):
            return
        if self.ema is not None and loss > self.ratio * self.ema:
            self.spikes += 1
            logs["loss_spikes"] = self.spikes
        self.ema = loss if self.ema is None else 0.95 * self.ema + 0.05 * loss

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step < self.warmup_steps:
            return
        for slot in optimizer.state.values():
            if "exp_avg_sq" in slot:
                slot["exp_avg_sq"].mul_(0.5)  # ruleid: MLS304


def main(model_name="EleutherAI/pythia-410m", data_dir="data/revisions", out="runs/critique_sft"):
    tok = AutoTokenizer.from_pretrained(model_name)
    tok.pad_token = tok.pad_token or tok.eos_token
    ds = load_from_disk(data_dir)
    ds = ds.map(lambda ex: tok(ex["prompt"] + ex["revision"], truncation=True, max_length=1024),
                remove_columns=ds["train"].column_names)
    model = AutoModelForCausalLM.from_pretrained(model_name)
    targs = TrainingArguments(
        output_dir=out, per_device_train_batch_size=4, gradient_accumulation_steps=8,
        learning_rate=2e-5, lr_scheduler_type="cosine", warmup_ratio=0.03,
        num_train_epochs=2, max_grad_norm=1.0, bf16=True, logging_steps=10,
        eval_strategy="steps", eval_steps=250, save_steps=250, load_best_model_at_end=True,
        metric_for_best_model="eval_loss", greater_is_better=False,
        label_smoothing_factor=0.05,  # ok: MLS309
        seed=17,  # ok: MLS301
        report_to=["wandb"],
    )
    trainer = Trainer(
        model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["validation"],
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
        callbacks=[LossSpikeMonitor(), EarlyStoppingCallback(early_stopping_patience=4)],  # ok: MLS307
    )
    trainer.train()
    trainer.save_model(out)


if __name__ == "__main__":
    main()
