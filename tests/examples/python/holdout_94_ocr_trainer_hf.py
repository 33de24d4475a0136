# ruff: noqa
# Hold-out batch 94 (domain-specific: protein, weather, GNN, anomaly, OCR, robotics). Measured once in session 4 (round 33): 14/18 (78%) at medium+.
"""Seq2SeqTrainer wrapper for TrOCR fine-tuning on line-level invoice crops."""
import time
import urllib.request

import evaluate
import yaml
from transformers import (Seq2SeqTrainer, Seq2SeqTrainingArguments, TrOCRProcessor,
                          VisionEncoderDecoderModel, default_data_collator)

from invoice_lines import InvoiceLineDataset

BASE = "microsoft/trocr-base-printed"


def fetch_charset(url, dest, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def build_trainer(cfg, run_dir):
    hp = yaml.safe_load(open(cfg["hparams"]))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    processor = TrOCRProcessor.from_pretrained(BASE, revision=cfg.get("revision", "main"))
    model = VisionEncoderDecoderModel.from_pretrained(BASE, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.config.decoder_start_token_id = processor.tokenizer.cls_token_id
    model.config.pad_token_id = processor.tokenizer.pad_token_id
    cer_metric = evaluate.load("cer")

    def encode(sample):
        enc = processor(images=sample["image"], return_tensors="pt")
        labels = processor.tokenizer(sample["text"], padding="max_length", max_length=64,
                                     truncation=True, return_tensors="pt").input_ids[0]
        labels[labels == processor.tokenizer.pad_token_id] = -100  # ok: MLS309
        return {"pixel_values": enc.pixel_values[0], "labels": labels}

    def compute_metrics(pred):
        label_ids = pred.label_ids.copy()
        label_ids[label_ids == -100] = processor.tokenizer.pad_token_id
        pred_str = processor.batch_decode(pred.predictions, skip_special_tokens=True)
        label_str = processor.batch_decode(label_ids, skip_special_tokens=True)
        return {"cer": cer_metric.compute(predictions=pred_str, references=label_str)}  # ok: MLS306

    args = Seq2SeqTrainingArguments(
        output_dir=run_dir, per_device_train_batch_size=hp["batch_size"], learning_rate=hp["lr"],
        num_train_epochs=hp["epochs"], warmup_ratio=0.05, label_smoothing_factor=0.1,
        predict_with_generate=True, evaluation_strategy="epoch", save_strategy="epoch",
        fp16=True, max_grad_norm=1.0, logging_steps=50, report_to=["tensorboard"], seed=hp.get("seed", 42),
    )
    train_ds = InvoiceLineDataset(cfg["train_manifest"], transform=encode)
    eval_ds = InvoiceLineDataset(cfg["eval_manifest"], transform=encode)
    return Seq2SeqTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          data_collator=default_data_collator, compute_metrics=compute_metrics,
                          tokenizer=processor.image_processor)
