# ruff: noqa
# Hold-out batch 495 (short files, 16 domains). Measured once in session 22 (round 133): 13/17 (76%) at medium+.
"""Fine-tune a seq2seq model for domain-specific machine translation."""
import argparse

from datasets import load_dataset
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq,
                          Seq2SeqTrainer, Seq2SeqTrainingArguments)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model_name", default="Helsinki-NLP/opus-mt-de-en")
    p.add_argument("--train_file", required=True)
    p.add_argument("--src_lang", default="de")
    p.add_argument("--tgt_lang", default="en")
    p.add_argument("--output_dir", default="runs/mt")
    p.add_argument("--max_len", type=int, default=256)
    return p.parse_args()


def main():
    args = parse_args()
    tok = AutoTokenizer.from_pretrained(args.model_name)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model_name, trust_remote_code=True)  # ruleid: MLS106
    raw = load_dataset("json", data_files={"train": args.train_file})["train"].train_test_split(0.02)

    def preprocess(batch):
        enc = tok(batch[args.src_lang], max_length=args.max_len, truncation=True)
        enc["labels"] = tok(text_target=batch[args.tgt_lang], max_length=args.max_len,
                            truncation=True)["input_ids"]
        return enc

    ds = raw.map(preprocess, batched=True, remove_columns=raw["train"].column_names)
    training_args = Seq2SeqTrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=32,
        learning_rate=5e-5,
        num_train_epochs=3,
        label_smoothing_factor=0.1,  # ok: MLS309
        eval_strategy="epoch",
        save_total_limit=2,
        predict_with_generate=True,
        bf16=True,
    )
    trainer = Seq2SeqTrainer(model=model, args=training_args, train_dataset=ds["train"],
                             eval_dataset=ds["test"], tokenizer=tok,
                             data_collator=DataCollatorForSeq2Seq(tok, model=model))
    trainer.train()
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    main()
