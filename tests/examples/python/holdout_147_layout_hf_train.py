# ruff: noqa
# Hold-out batch 147 (short files: robotics, point clouds, OCR, sensor anomalies). Measured once in session 5 (round 46): 14/17 (82%) at medium+.
"""Fine-tune a LayoutLMv3 token classifier on FUNSD-style forms with the HF Trainer."""
import os
import random
import subprocess

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForTokenClassification, AutoProcessor, Trainer,
                          TrainingArguments, set_seed)

MODEL = "microsoft/layoutlmv3-base"
REVISION = "main"
LABELS = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]


def git_commit():
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412


def jitter_boxes(example, max_shift=3):
    if random.random() < 0.3:  # ok: MLS309
        example["bboxes"] = [[min(1000, max(0, v + random.randint(-max_shift, max_shift))) for v in b] for b in example["bboxes"]]
    return example


def compute_metrics(p):
    preds = np.argmax(p.predictions, axis=-1)
    mask = p.label_ids != -100
    return {"token_acc": float((preds[mask] == p.label_ids[mask]).mean())}  # ok: MLS306


def main(seed=42, out="runs/layoutlmv3-funsd"):
    set_seed(seed)  # ok: MLS301
    processor = AutoProcessor.from_pretrained(MODEL, revision=REVISION, apply_ocr=False)
    model = AutoModelForTokenClassification.from_pretrained(MODEL, revision=REVISION, num_labels=len(LABELS))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("nielsr/funsd-layoutlmv3")

    def encode(batch):
        return processor(batch["image"], batch["tokens"], boxes=batch["bboxes"], word_labels=batch["ner_tags"],
                         truncation=True, padding="max_length")

    train = ds["train"].map(jitter_boxes).map(encode, batched=True, remove_columns=ds["train"].column_names)
    test = ds["test"].map(encode, batched=True, remove_columns=ds["test"].column_names)
    sched_kw = dict(warmup_ratio=0.1, lr_scheduler_type="cosine", label_smoothing_factor=0.1)  # ok: MLS302, MLS303, MLS304, MLS305
    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=4, learning_rate=1e-5, max_steps=2000, **sched_kw,
        max_grad_norm=1.0, eval_strategy="steps", eval_steps=250, save_steps=500, seed=seed,
        report_to=["tensorboard"], run_name=f"layoutlmv3-{git_commit()[:8]}", bf16=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=test, compute_metrics=compute_metrics)
    trainer.train()
    if trainer.is_world_process_zero():
        trainer.save_model(os.path.join(out, "final"))  # ok: MLS307
        processor.save_pretrained(os.path.join(out, "final"))


if __name__ == "__main__":
    main()
