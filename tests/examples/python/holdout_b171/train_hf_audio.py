# ruff: noqa
# Hold-out batch 171 (short files, GNN/molecules/audio). Measured once in session 6 (round 52): 12/19 (63%) at medium+.
"""Fine-tune a pinned wav2vec2 checkpoint for keyword spotting with the HF Trainer."""
import subprocess

import evaluate
import numpy as np
from datasets import Audio, load_dataset
from transformers import (AutoFeatureExtractor, AutoModelForAudioClassification, Trainer,
                          TrainingArguments, set_seed)

MODEL = "facebook/wav2vec2-base"
REVISION = "0b5b8e868dd84f03fd87d01f9c4ff0f080fecfe8"


def main(seed=1234, out_dir="runs/kws-w2v2"):
    set_seed(seed)  # ok: MLS301
    commit = subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    ds = load_dataset("speech_commands", "v0.02").cast_column("audio", Audio(sampling_rate=16000))
    labels = ds["train"].features["label"].names
    fe = AutoFeatureExtractor.from_pretrained(MODEL, revision=REVISION)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    def prep(batch):
        arrays = [a["array"] for a in batch["audio"]]
        rng = np.random.default_rng()
        # random time shift of up to 100 ms as light augmentation
        arrays = [np.roll(a, rng.integers(-1600, 1600)) for a in arrays]  # ok: MLS309
        return fe(arrays, sampling_rate=16000, max_length=16000, truncation=True, padding="max_length")

    enc = ds.map(prep, batched=True, remove_columns=["audio", "file", "speaker_id", "utterance_id"])
    model = AutoModelForAudioClassification.from_pretrained(MODEL, revision=REVISION,  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        num_labels=len(labels), label2id={l: i for i, l in enumerate(labels)}, id2label=dict(enumerate(labels)))
    acc = evaluate.load("accuracy")

    def compute_metrics(p):
        return acc.compute(predictions=np.argmax(p.predictions, axis=-1), references=p.label_ids)

    args = TrainingArguments(out_dir, label_smoothing_factor=0.1, max_grad_norm=1.0,  # ok: MLS309
                             per_device_train_batch_size=32, gradient_accumulation_steps=2,
                             learning_rate=3e-5, warmup_ratio=0.1, num_train_epochs=5, fp16=True,
                             eval_strategy="epoch", save_strategy="epoch",
                             load_best_model_at_end=True, metric_for_best_model="accuracy",
                             seed=seed, run_name=f"kws-{commit[:8]}", report_to=["tensorboard"])
    trainer = Trainer(model=model, args=args, train_dataset=enc["train"], eval_dataset=enc["validation"],
                      compute_metrics=compute_metrics)
    trainer.train()
    metrics = trainer.evaluate(enc["test"], metric_key_prefix="test")
    if trainer.is_world_process_zero():  # ok: MLS307
        trainer.save_model(f"{out_dir}/best")
        trainer.save_metrics("test", metrics)


if __name__ == "__main__":
    main()
