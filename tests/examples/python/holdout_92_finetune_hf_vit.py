# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""Fine-tune a zoo ViT on a downstream image folder with the Hugging Face Trainer."""
import argparse

import numpy as np
import torch
from datasets import load_dataset
from torchvision import transforms
from transformers import (AutoImageProcessor, AutoModelForImageClassification, EarlyStoppingCallback,
                          Trainer, TrainingArguments, set_seed)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="example-org/vit-small-patch16-224-zoo")
    p.add_argument("--revision", default="a1b2c3d4e5f60718293a4b5c6d7e8f9012345678")
    p.add_argument("--data", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="output/finetune")
    args = p.parse_args()
    set_seed(args.seed)  # ok: MLS301

    ds = load_dataset("imagefolder", data_dir=args.data)
    labels = ds["train"].features["label"].names
    proc = AutoImageProcessor.from_pretrained(args.model, revision=args.revision)
    model = AutoModelForImageClassification.from_pretrained(  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        args.model, revision=args.revision, num_labels=len(labels), ignore_mismatched_sizes=True,
        use_safetensors=True)

    norm = transforms.Normalize(proc.image_mean, proc.image_std)
    size = proc.size["height"]
    train_tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), norm])
    val_tf = transforms.Compose([transforms.Resize(int(size / 0.9)), transforms.CenterCrop(size),
                                 transforms.ToTensor(), norm])

    def _apply(tf):
        def fn(batch):
            batch["pixel_values"] = [tf(im.convert("RGB")) for im in batch["image"]]  # ok: MLS309
            return batch
        return fn

    ds["train"].set_transform(_apply(train_tf))
    ds["validation"].set_transform(_apply(val_tf))

    def collate(rows):
        return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                "labels": torch.tensor([r["label"] for r in rows])}

    def compute_metrics(pred):
        return {"accuracy": float(np.mean(pred.predictions.argmax(-1) == pred.label_ids))}  # ok: MLS306

    targs = TrainingArguments(args.out, learning_rate=5e-5, per_device_train_batch_size=64, num_train_epochs=20,
                              warmup_ratio=0.1, weight_decay=0.05, bf16=True, eval_strategy="epoch",
                              save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="accuracy",
                              remove_unused_columns=False, seed=args.seed, report_to="none")
    early_stop = EarlyStoppingCallback(early_stopping_patience=3)  # ok: MLS307
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["validation"],
                      data_collator=collate, compute_metrics=compute_metrics, callbacks=[early_stop])
    trainer.train()
    if trainer.is_world_process_zero():
        trainer.save_model(args.out)  # ok: MLS308


if __name__ == "__main__":
    main()
