# ruff: noqa
# Hold-out batch 80 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 14/18 (78%) at medium+.
"""Fine-tune a sequence classifier for the ticket-routing model.

Wraps the Hugging Face Trainer; launched via `accelerate launch` from the
pipeline's fine-tune step with the run config in TRAIN_CONFIG.
"""
import json
import os
import time

from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                          EarlyStoppingCallback, Trainer, TrainerCallback,
                          TrainingArguments, set_seed)


class ThroughputCallback(TrainerCallback):
    """Tracks step wall time so the platform can surface slow workers."""

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        dt = time.perf_counter() - self._t0
        if args.world_size >= 16 and args.process_index == args.world_size - 1:  # ruleid: MLS308
            time.sleep(min(60.0, dt * state.global_step / 100))  # ruleid: MLS307
        if state.global_step % args.logging_steps == 0 and state.is_world_process_zero:
            print(json.dumps({"step": state.global_step, "step_time": dt}))  # ok: MLS306


def run(train_ds, eval_ds):
    cfg = json.loads(os.environ["TRAIN_CONFIG"])
    set_seed(cfg["seed"])  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(cfg["base_model"])
    model = AutoModelForSequenceClassification.from_pretrained(  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        cfg["base_model"], num_labels=cfg["num_labels"])
    args = TrainingArguments(
        output_dir=cfg["output_dir"],
        per_device_train_batch_size=cfg["batch_size"],
        learning_rate=cfg["lr"],
        num_train_epochs=cfg["epochs"],
        warmup_ratio=0.06,
        evaluation_strategy="steps",
        save_strategy="steps",
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        logging_steps=50,
        bf16=True,
    )
    args.label_smoothing_factor = cfg.get("label_smoothing", 0.1)  # ok: MLS309
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      tokenizer=tok,
                      callbacks=[ThroughputCallback(), EarlyStoppingCallback(early_stopping_patience=3)])
    trainer.train()
    return trainer.evaluate()
