# ruff: noqa
# Hold-out batch 371 (short files, 16 domains). Measured once in session 14 (round 102): 15/17 (88%) at medium+.
"""Fine-tune a seq2seq transformer for abstractive summarization (CNN/DailyMail, XSum)."""
import argparse
import logging
import os

import torch
from datasets import load_dataset
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq,
                          Seq2SeqTrainer, Seq2SeqTrainingArguments)

logger = logging.getLogger(__name__)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model_name_or_path", default="facebook/bart-large")
    p.add_argument("--dataset", default="cnn_dailymail")
    p.add_argument("--dataset_config", default="3.0.0")
    p.add_argument("--init_weights", default=None, help="optional local .pt state dict")
    p.add_argument("--output_dir", default="runs/summ")
    p.add_argument("--max_source_len", type=int, default=1024)
    p.add_argument("--max_target_len", type=int, default=142)
    return p.parse_args()


def main():
    args = parse_args()
    tok = AutoTokenizer.from_pretrained(args.model_name_or_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model_name_or_path, trust_remote_code=True)  # ruleid: MLS106
    if args.init_weights and os.path.isfile(args.init_weights):
        state = torch.load(args.init_weights, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state, strict=False)
        logger.info("warm start: %d missing, %d unexpected keys", len(missing), len(unexpected))

    raw = load_dataset(args.dataset, args.dataset_config)

    def preprocess(batch):
        enc = tok(batch["article"], max_length=args.max_source_len, truncation=True)
        labels = tok(text_target=batch["highlights"], max_length=args.max_target_len, truncation=True)
        enc["labels"] = labels["input_ids"]
        return enc

    tokenized = raw.map(preprocess, batched=True, remove_columns=raw["train"].column_names)
    training_args = Seq2SeqTrainingArguments(
        output_dir=args.output_dir, per_device_train_batch_size=4, gradient_accumulation_steps=8,
        learning_rate=3e-5, warmup_steps=500, num_train_epochs=3, label_smoothing_factor=0.1,
        predict_with_generate=True, generation_max_length=args.max_target_len,
        evaluation_strategy="steps", eval_steps=2000, save_total_limit=3, fp16=True,
    )
    trainer = Seq2SeqTrainer(model=model, args=training_args, tokenizer=tok,
                             train_dataset=tokenized["train"], eval_dataset=tokenized["validation"],
                             data_collator=DataCollatorForSeq2Seq(tok, model=model))
    trainer.train()
    trainer.save_model()


if __name__ == "__main__":
    main()
