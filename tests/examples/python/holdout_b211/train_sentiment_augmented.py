# ruff: noqa
# Hold-out batch 211 (16 short benchmark-format files). Measured once in session 7 (round 62): 14/18 (78%) at medium+.
"""Sentiment fine-tuning with token-dropout augmentation and early stopping (HF Trainer)."""
import numpy as np
import torch
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          EarlyStoppingCallback, Trainer, TrainingArguments, set_seed)

MODEL = "distilroberta-base"
SEED = 13


class TokenDropoutCollator(DataCollatorWithPadding):
    """Randomly masks a small fraction of input tokens while the model is training."""

    def __init__(self, tokenizer, model, p=0.1):
        super().__init__(tokenizer)
        self.model, self.p = model, p

    def __call__(self, features):
        batch = super().__call__(features)
        if not self.model.training:
            return batch
        ids = batch["input_ids"]
        drop = (torch.rand(ids.shape) < self.p) & (batch["attention_mask"] == 1)
        drop[:, 0] = False
        ids[drop] = self.tokenizer.mask_token_id  # ok: MLS309
        return batch


def main():
    set_seed(SEED)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(MODEL)
    ds = load_dataset("imdb").map(lambda b: tok(b["text"], truncation=True, max_length=256), batched=True)
    split = ds["train"].train_test_split(test_size=0.05, seed=SEED)
    model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=2, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    def metrics(p):
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    args = TrainingArguments(  # ok: MLS309
        output_dir="runs/imdb", num_train_epochs=4, learning_rate=3e-5, per_device_train_batch_size=16,
        gradient_accumulation_steps=2, warmup_steps=500, label_smoothing_factor=0.1,
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="accuracy", seed=SEED, bf16=torch.cuda.is_bf16_supported(),
    )
    early_stop = EarlyStoppingCallback(early_stopping_patience=2)  # ok: MLS307
    trainer = Trainer(model=model, args=args, train_dataset=split["train"], eval_dataset=split["test"],
                      data_collator=TokenDropoutCollator(tok, model), compute_metrics=metrics, callbacks=[early_stop])
    trainer.train()
    result = trainer.evaluate(ds["test"])
    if trainer.is_world_process_zero():
        trainer.save_model("runs/imdb/best")  # ok: MLS308
        print({k: round(v, 4) for k, v in result.items() if isinstance(v, float)})


if __name__ == "__main__":
    main()
