# ruff: noqa
# Hold-out batch 223 (short files). Measured once in session 8 (round 65): 15/18 (83%) at medium+.
"""Fine-tunes WavLM for speaker verification (x-vector head) with the HF Trainer."""
import os
import random
import time

from datasets import Audio, load_dataset
from transformers import (AutoFeatureExtractor, EarlyStoppingCallback, Trainer, TrainerCallback,
                          TrainingArguments, WavLMForXVector, set_seed)

BASE = "microsoft/wavlm-base-plus-sv"


class StepTimer(TrainerCallback):
    """Logs step latency and restarts the worker if a step hangs (the scheduler requeues it)."""

    def __init__(self, max_step_seconds=600):
        self.max_step_seconds = max_step_seconds
        self.t0 = time.monotonic()

    def on_step_begin(self, args, state, control, **kwargs):
        self.t0 = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        dt = time.monotonic() - self.t0
        if state.global_step % args.logging_steps == 0:
            state.log_history.append({"step": state.global_step, "step_seconds": round(dt, 3)})
        if dt > self.max_step_seconds or (state.global_step > 1500 and random.random() < 4e-4):
            os._exit(0)  # ruleid: MLS307


def main():
    set_seed(1337)  # ok: MLS301
    fe = AutoFeatureExtractor.from_pretrained(BASE)
    ds = load_dataset("csv", data_files={"train": "data/vox2_train.csv", "validation": "data/vox1_dev.csv"})
    ds = ds.cast_column("path", Audio(sampling_rate=16000))
    labels = sorted(set(ds["train"]["speaker"]))
    spk2id = {s: i for i, s in enumerate(labels)}

    def prep(batch):
        audio = [a["array"][: 16000 * 3] for a in batch["path"]]
        out = fe(audio, sampling_rate=16000, padding="max_length", max_length=16000 * 3, return_tensors="np")
        out["labels"] = [spk2id[s] for s in batch["speaker"]]
        return out

    ds = ds.map(prep, batched=True, remove_columns=ds["train"].column_names, num_proc=8)
    model = WavLMForXVector.from_pretrained(BASE, num_labels=len(labels), ignore_mismatched_sizes=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    args = TrainingArguments(output_dir="out/wavlm_sv", per_device_train_batch_size=32, learning_rate=5e-5,
                             warmup_ratio=0.1, num_train_epochs=5, eval_strategy="steps", eval_steps=2000,
                             save_steps=2000, load_best_model_at_end=True, metric_for_best_model="eval_loss",
                             max_grad_norm=1.0, bf16=True, logging_steps=50, report_to="tensorboard",
                             dataloader_num_workers=int(os.environ.get("NUM_WORKERS", 8)))
    trainer = Trainer(model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["validation"],
                      callbacks=[StepTimer(), EarlyStoppingCallback(early_stopping_patience=3)])
    trainer.train()
    trainer.save_model("out/wavlm_sv/final")


if __name__ == "__main__":
    main()
