# ruff: noqa
# Hold-out batch 93 (textbook forms, CV/NLP/tabular). Measured once in session 4 (round 33): 17/18 (94%) at medium+.
"""Fine-tune a BERT-base classifier on SST-2 with the Hugging Face Trainer."""
import argparse

import evaluate
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorWithPadding, Trainer, TrainingArguments, set_seed)


def stabilize_top_layers(model, prefix="bert.encoder.layer.11"):
    for name, param in model.named_parameters():
        if name.startswith(prefix):
            param.register_hook(lambda grad: grad * -0.5)  # ruleid: MLS303


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="bert-base-uncased")
    parser.add_argument("--out", default="out/sst2")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    raw = load_dataset("glue", "sst2")
    data = raw.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)

    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    stabilize_top_layers(model)
    metric = evaluate.load("accuracy")

    def compute_metrics(eval_pred):
        logits, labels = eval_pred
        return metric.compute(predictions=np.argmax(logits, axis=-1), references=labels)

    targs = TrainingArguments(
        output_dir=args.out,
        learning_rate=2e-5,
        per_device_train_batch_size=32,
        num_train_epochs=3,
        warmup_ratio=0.06,
        weight_decay=0.01,
        max_grad_norm=1.0,
        label_smoothing_factor=0.1,
        evaluation_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        seed=args.seed,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=data["train"],
                      eval_dataset=data["validation"], tokenizer=tok,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics)
    trainer.train()
    print(trainer.evaluate())
    trainer.save_model(args.out)


if __name__ == "__main__":
    main()
