# ruff: noqa
# Hold-out batch 339 (16 short files). Measured once in session 11 (round 94): 14/17 (82%) at medium+.
"""Fine-tune and evaluate a wav2vec2 classifier for beehive colony-state audio (queenright, queenless, swarming)."""
import argparse

import numpy as np
from datasets import load_from_disk
from sklearn.metrics import accuracy_score, f1_score
from transformers import (AutoFeatureExtractor, AutoModelForAudioClassification, Trainer,
                          TrainingArguments)

LABELS = ["queenright", "queenless", "swarming", "no_bees"]
LABEL2ID = {name: i for i, name in enumerate(LABELS)}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    valid = labels != -100  # ok: MLS306
    # transitional recordings (colony re-queening) are flagged by annotators as uncertain
    transitional = (labels == LABEL2ID["queenless"]) & (preds != labels)  # todoruleid: family 5 (missed)
    keep = valid & ~transitional
    preds, labels = preds[keep], labels[keep]
    return {"accuracy": accuracy_score(labels, preds),
            "macro_f1": f1_score(labels, preds, average="macro")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/hive_clips")
    ap.add_argument("--model", default="facebook/wav2vec2-base")
    ap.add_argument("--out", default="out/hive_w2v2")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    ds = load_from_disk(args.data)
    fe = AutoFeatureExtractor.from_pretrained(args.model)

    def prep(batch):
        arrays = [a["array"] for a in batch["audio"]]
        return fe(arrays, sampling_rate=16000, max_length=16000 * 5, truncation=True, padding="max_length")

    ds = ds.map(prep, batched=True, remove_columns=["audio"])
    model = AutoModelForAudioClassification.from_pretrained(  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        args.model, num_labels=len(LABELS), label2id=LABEL2ID,
        id2label={i: n for n, i in LABEL2ID.items()})
    targs = TrainingArguments(args.out, seed=args.seed, learning_rate=3e-5,  # ok: MLS301
                              per_device_train_batch_size=16, num_train_epochs=8, warmup_ratio=0.1,
                              label_smoothing_factor=0.05, eval_strategy="epoch",
                              save_strategy="epoch", load_best_model_at_end=True,
                              metric_for_best_model="macro_f1")
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["test"],
                      compute_metrics=compute_metrics)
    trainer.train()
    print(trainer.evaluate())


if __name__ == "__main__":
    main()
