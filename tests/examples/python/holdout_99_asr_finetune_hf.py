# ruff: noqa
# Hold-out batch 99 (applied ML: speech, recsys, CTR, ranking, fraud, video). Measured once in session 4 (round 34): 15/17 (88%) at medium+.
"""Fine-tune wav2vec2 with a CTC head on an in-house transcribed speech set.

Uses the Hugging Face Trainer; WER on the dev split is the model-selection metric.
"""
import argparse

import evaluate
import numpy as np
import torch
from datasets import Audio, load_from_disk
from transformers import (Trainer, TrainingArguments, Wav2Vec2ForCTC, Wav2Vec2Processor,
                          set_seed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="facebook/wav2vec2-base")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()

    set_seed(args.seed)  # ok: MLS301
    processor = Wav2Vec2Processor.from_pretrained(args.base)
    ds = load_from_disk(args.data).cast_column("audio", Audio(sampling_rate=16000))

    def prepare(batch):
        batch["input_values"] = processor(batch["audio"]["array"], sampling_rate=16000).input_values[0]
        batch["labels"] = processor.tokenizer(batch["text"]).input_ids
        return batch

    ds = ds.map(prepare, remove_columns=ds["train"].column_names)
    model = Wav2Vec2ForCTC.from_pretrained(args.base, ctc_loss_reduction="mean", pad_token_id=processor.tokenizer.pad_token_id)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.freeze_feature_encoder()  # ok: MLS302, MLS303, MLS304, MLS305
    wer_metric = evaluate.load("wer")

    def collate(features):
        batch = processor.pad([{"input_values": f["input_values"]} for f in features], return_tensors="pt")
        labels = processor.tokenizer.pad([{"input_ids": f["labels"]} for f in features], return_tensors="pt")
        batch["labels"] = labels["input_ids"].masked_fill(labels["attention_mask"].ne(1), -100)
        return batch

    def compute_metrics(pred):
        pred_ids = np.argmax(pred.predictions, axis=-1)
        pred.label_ids[pred.label_ids == -100] = processor.tokenizer.pad_token_id  # ok: MLS306
        hyps = processor.batch_decode(pred_ids)
        refs = processor.batch_decode(pred.label_ids, group_tokens=False)
        return {"wer": wer_metric.compute(predictions=hyps, references=refs)}

    targs = TrainingArguments(output_dir=args.out, per_device_train_batch_size=16, gradient_accumulation_steps=2,
                              learning_rate=1e-4, warmup_steps=500, max_steps=20000, fp16=torch.cuda.is_available(),
                              max_grad_norm=1.0, eval_strategy="steps", eval_steps=1000, save_steps=1000,
                              load_best_model_at_end=True, metric_for_best_model="wer", greater_is_better=False,
                              seed=args.seed)
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["dev"],
                      data_collator=collate, compute_metrics=compute_metrics)
    trainer.train()
    if trainer.is_world_process_zero():
        trainer.save_model(args.out)  # ok: MLS307
        processor.save_pretrained(args.out)


if __name__ == "__main__":
    main()
